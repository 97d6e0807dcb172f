//! The OData `$filter` grammar of SPEC §3.1: a hand-written lexer and recursive-descent parser
//! into a small tree, and a printer whose output parses back to the same tree.
//!
//! ```text
//! expr    := and ("or" and)*
//! and     := unary ("and" unary)*
//! unary   := "not" unary | primary
//! primary := "(" expr ")" | func "(" member "," string ")" | operand op operand
//!          | member "in" "(" literal ("," literal)* ")"
//!          | "Microsoft.Dynamics.CRM." name "(" param ("," param)* ")"
//! param   := name "=" (literal | "[" literal ("," literal)* "]")
//! operand := member | literal
//! op      := eq | ne | gt | ge | lt | le
//! literal := string | integer | decimal | true | false | null | guid | datetime | date
//! ```
//!
//! `member in (a, b, …)` is read as `member eq a or member eq b or …`, which is what OData's
//! `in` means (the printer writes it that way). A literal on the left is turned around
//! (`5 lt x` is `x gt 5`); two literals are decided when parsed (`1 eq 1` holds, and prints so);
//! two members compare the row's own values (`firstname eq lastname`). Dataverse's query
//! functions (`Microsoft.Dynamics.CRM.LastXDays(PropertyName='createdon',PropertyValue=7)`) are
//! read into those same comparisons as they are parsed (`functions.rs`), relative to the
//! request's time and user ([`FilterContext`]).
//!
//! Written by hand (not a parser generator) because the grammar is small, the error messages
//! are part of the product, and input length and nesting depth must be bounded.

use std::fmt;

use uuid::Uuid;

use crate::metadata::AttributeType;
use crate::value::{normalize_datetime, normalize_datetime_literal};
use crate::{Error, Result};

mod functions;

pub use functions::{FilterContext, QUERY_FUNCTIONS, QueryFunctionValue};

/// Longest `$filter` accepted, in bytes: Dataverse's own limit on a request URL (32 KiB).
pub(crate) const FILTER_BYTES_MAX: usize = 32 * 1024;
/// Deepest nesting of parentheses and `not` accepted.
pub(crate) const FILTER_DEPTH_MAX: usize = 64;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Both hold.
    And(Box<Filter>, Box<Filter>),
    /// Either holds.
    Or(Box<Filter>, Box<Filter>),
    /// Does not hold.
    Not(Box<Filter>),
    /// `attribute op literal`.
    Compare {
        /// Attribute name as written (logical name or `_x_value`).
        attribute: String,
        /// Comparison.
        op: CompareOp,
        /// Right-hand side.
        value: Literal,
    },
    /// `left op right`: two attributes of the same record.
    CompareAttributes {
        /// Attribute name on the left, as written.
        left: String,
        /// Comparison.
        op: CompareOp,
        /// Attribute name on the right, as written.
        right: String,
    },
    /// A comparison of two literals, decided when it was parsed: always true or always false.
    Constant(bool),
    /// `contains(attribute, 'text')` and friends.
    Function {
        /// Which function.
        function: StringFunction,
        /// Attribute name as written.
        attribute: String,
        /// The text searched for.
        value: String,
    },
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Greater than.
    Gt,
    /// Greater or equal.
    Ge,
    /// Less than.
    Lt,
    /// Less or equal.
    Le,
}

impl CompareOp {
    const ALL: [(CompareOp, &'static str); 6] = [
        (CompareOp::Eq, "eq"),
        (CompareOp::Ne, "ne"),
        (CompareOp::Gt, "gt"),
        (CompareOp::Ge, "ge"),
        (CompareOp::Lt, "lt"),
        (CompareOp::Le, "le"),
    ];

    /// The operator that means the same with its operands swapped (`a lt b` is `b gt a`).
    pub fn flipped(self) -> CompareOp {
        match self {
            CompareOp::Gt => CompareOp::Lt,
            CompareOp::Ge => CompareOp::Le,
            CompareOp::Lt => CompareOp::Gt,
            CompareOp::Le => CompareOp::Ge,
            same => same,
        }
    }

    /// Whether `ordering` (left against right) satisfies this operator.
    pub fn holds(self, ordering: std::cmp::Ordering) -> bool {
        match self {
            CompareOp::Eq => ordering.is_eq(),
            CompareOp::Ne => ordering.is_ne(),
            CompareOp::Gt => ordering.is_gt(),
            CompareOp::Ge => ordering.is_ge(),
            CompareOp::Lt => ordering.is_lt(),
            CompareOp::Le => ordering.is_le(),
        }
    }

    /// The OData keyword.
    pub fn as_str(self) -> &'static str {
        CompareOp::ALL
            .iter()
            .find(|(op, _)| *op == self)
            .expect("every op is listed")
            .1
    }
}

/// String functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringFunction {
    /// Substring.
    Contains,
    /// Prefix.
    StartsWith,
    /// Suffix.
    EndsWith,
}

impl StringFunction {
    /// The OData name.
    pub fn as_str(self) -> &'static str {
        match self {
            StringFunction::Contains => "contains",
            StringFunction::StartsWith => "startswith",
            StringFunction::EndsWith => "endswith",
        }
    }
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `null`.
    Null,
    /// `true` or `false`.
    Boolean(bool),
    /// An integer that fits 64 bits.
    Integer(i64),
    /// A decimal number, kept as written (validated) so printing is exact.
    Decimal(String),
    /// A quoted string, unescaped.
    String(String),
    /// A bare GUID.
    Guid(Uuid),
    /// A date-time, normalised to `YYYY-MM-DDTHH:MM:SSZ`, or `YYYY-MM-DDTHH:MM:SS.fffZ` when it
    /// has a fraction of a second (up to nanoseconds, trailing zeros dropped).
    DateTime(String),
    /// A date `YYYY-MM-DD`.
    Date(String),
    /// A query function's value written in quotes (`In`'s and `Between`'s `PropertyValues`,
    /// which Dataverse takes as strings whatever the attribute), read as the type of the
    /// attribute it is compared with: `'5'` is 5 to a number, a GUID to a lookup.
    Text(String),
    /// A member of an enumeration, `Microsoft.Dynamics.CRM.AttributeTypeCode'Picklist'`: only
    /// table definitions' properties are enumerations (a record's attribute never is one).
    Enum {
        /// The enumeration's name, without the namespace.
        type_name: String,
        /// The member's name.
        member: String,
    },
}

impl Literal {
    /// This literal as one for an attribute of type `kind`: a [`Literal::Text`] is read as that
    /// type (`None` when it is not one of its values); any other literal is itself, borrowed
    /// (every comparison of every `$filter` passes here).
    pub(crate) fn typed(&self, kind: &AttributeType) -> Option<std::borrow::Cow<'_, Literal>> {
        let Literal::Text(text) = self else {
            return Some(std::borrow::Cow::Borrowed(self));
        };
        let trimmed = text.trim();
        let read = match kind {
            AttributeType::String { .. } | AttributeType::Memo => {
                Some(Literal::String(text.clone()))
            }
            AttributeType::Boolean => match trimmed {
                "true" => Some(Literal::Boolean(true)),
                "false" => Some(Literal::Boolean(false)),
                _ => None,
            },
            AttributeType::Lookup { .. } | AttributeType::UniqueIdentifier => {
                Uuid::parse_str(trimmed).ok().map(Literal::Guid)
            }
            AttributeType::DateTime => number_or_date(trimmed)
                .filter(|literal| matches!(literal, Literal::Date(_) | Literal::DateTime(_))),
            _ => number_or_date(trimmed)
                .filter(|literal| matches!(literal, Literal::Integer(_) | Literal::Decimal(_))),
        };
        read.map(std::borrow::Cow::Owned)
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Null => f.write_str("null"),
            Literal::Boolean(b) => write!(f, "{b}"),
            Literal::Integer(n) => write!(f, "{n}"),
            Literal::Decimal(text) => f.write_str(text),
            Literal::String(s) | Literal::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Literal::Guid(g) => write!(f, "{g}"),
            Literal::DateTime(text) | Literal::Date(text) => f.write_str(text),
            Literal::Enum { type_name, member } => write!(
                f,
                "{}{type_name}'{}'",
                functions::NAMESPACE,
                member.replace('\'', "''")
            ),
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::And(l, r) => write!(f, "({l}) and ({r})"),
            Filter::Or(l, r) => write!(f, "({l}) or ({r})"),
            Filter::Not(inner) => write!(f, "not ({inner})"),
            Filter::Compare {
                attribute,
                op,
                value,
            } => write!(f, "{attribute} {} {value}", op.as_str()),
            Filter::CompareAttributes { left, op, right } => {
                write!(f, "{left} {} {right}", op.as_str())
            }
            Filter::Constant(true) => f.write_str("1 eq 1"),
            Filter::Constant(false) => f.write_str("1 eq 0"),
            Filter::Function {
                function,
                attribute,
                value,
            } => {
                write!(
                    f,
                    "{}({attribute},{})",
                    function.as_str(),
                    Literal::String(value.clone())
                )
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Literal(Literal),
    Open,
    Close,
    Comma,
    /// `=` between a query function's parameter and its value.
    Equals,
    /// `[` and `]` around a query function's list of values.
    OpenList,
    CloseList,
}

/// Parses a `$filter` expression. Query functions relative to the request's time or user are
/// refused here ([`parse_filter_in`] with a context reads them).
pub fn parse_filter(input: &str) -> Result<Filter> {
    parse_filter_in(input, None)
}

/// Parses a `$filter` expression whose query functions are relative to `context`, when given.
pub(crate) fn parse_filter_in(input: &str, context: Option<&FilterContext>) -> Result<Filter> {
    if input.len() > FILTER_BYTES_MAX {
        return Err(bad(format!(
            "$filter is longer than {FILTER_BYTES_MAX} bytes"
        )));
    }
    let tokens = lex(input)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        depth: 0,
        end: input.len(),
        context,
    };
    let filter = parser.expr()?;
    if let Some((token, at)) = parser.tokens.get(parser.pos) {
        return Err(bad(format!(
            "unexpected {} at position {at}",
            describe(token)
        )));
    }
    Ok(filter)
}

/// `left op right` for two literals, by OData's rules: `eq` holds for two nulls and `ne` for
/// one, an ordering with a null is false; numbers compare as numbers, text ignoring case (as
/// the stores compare it), booleans and GUIDs only for equality, dates with dates. Literals of
/// different kinds cannot be compared.
fn constant(left: &Literal, op: CompareOp, right: &Literal) -> Result<bool> {
    use std::cmp::Ordering;
    let equality = matches!(op, CompareOp::Eq | CompareOp::Ne);
    let number = |literal: &Literal| match literal {
        Literal::Integer(n) => Some(*n as f64),
        Literal::Decimal(text) => text.parse::<f64>().ok(),
        _ => None,
    };
    let ordering: Option<Ordering> = match (left, right) {
        (Literal::Null, Literal::Null) => return Ok(op.holds(Ordering::Equal) && equality),
        (Literal::Null, _) | (_, Literal::Null) => return Ok(op == CompareOp::Ne),
        (Literal::Integer(a), Literal::Integer(b)) => Some(a.cmp(b)),
        (Literal::String(a), Literal::String(b)) => Some(crate::caseless::compare(a, b)),
        (Literal::DateTime(a), Literal::DateTime(b)) => {
            // Whole seconds in text order, then the fraction's digits (dropped zeros pad right).
            let key = |text: &str| {
                let (seconds, fraction) = text.split_once('.').unwrap_or((text, "Z"));
                let fraction = fraction.trim_end_matches('Z');
                (seconds.to_string(), format!("{fraction:0<9}"))
            };
            Some(key(a).cmp(&key(b)))
        }
        (Literal::Date(a), Literal::Date(b)) => Some(a.cmp(b)),
        (Literal::Boolean(a), Literal::Boolean(b)) if equality => Some(a.cmp(b)),
        (Literal::Guid(a), Literal::Guid(b)) if equality => Some(a.cmp(b)),
        (a, b) => match (number(a), number(b)) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => None,
        },
    };
    ordering.map(|o| op.holds(o)).ok_or_else(|| {
        bad(format!(
            "{left} {} {right} compares values that cannot be compared that way",
            op.as_str()
        ))
    })
}

fn bad(message: String) -> Error {
    Error::BadRequest(format!("invalid $filter: {message}"))
}

fn describe(token: &Token) -> String {
    match token {
        Token::Ident(name) => format!("'{name}'"),
        Token::Literal(literal) => format!("literal {literal}"),
        Token::Open => "'('".into(),
        Token::Close => "')'".into(),
        Token::Comma => "','".into(),
        Token::Equals => "'='".into(),
        Token::OpenList => "'['".into(),
        Token::CloseList => "']'".into(),
    }
}

fn lex(input: &str) -> Result<Vec<(Token, usize)>> {
    let bytes = input.as_bytes();
    let mut tokens = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let c = bytes[pos];
        let start = pos;
        if c.is_ascii_whitespace() {
            pos += 1;
            continue;
        }
        let punctuation = match c {
            b'(' => Some(Token::Open),
            b')' => Some(Token::Close),
            b',' => Some(Token::Comma),
            b'=' => Some(Token::Equals),
            b'[' => Some(Token::OpenList),
            b']' => Some(Token::CloseList),
            _ => None,
        };
        if let Some(token) = punctuation {
            tokens.push((token, start));
            pos += 1;
            continue;
        }
        let token = match c {
            b'\'' => {
                let (text, end) = quoted(input, pos)?;
                pos = end;
                Token::Literal(Literal::String(text))
            }
            _ if is_guid_at(bytes, pos) => {
                pos += 36;
                Token::Literal(Literal::Guid(
                    Uuid::parse_str(&input[start..pos]).expect("checked shape"),
                ))
            }
            b'0'..=b'9' | b'-' | b'+' => {
                pos = scan_word(bytes, pos + 1, |b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'-' | b'+')
                });
                let word = &input[start..pos];
                Token::Literal(
                    number_or_date(word).ok_or_else(|| {
                        bad(format!("invalid literal '{word}' at position {start}"))
                    })?,
                )
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                // A member may be a path into a complex value (`IsAuditEnabled/Value`,
                // which table definitions have; no record's attribute does).
                pos = scan_word(bytes, pos, |b| {
                    b.is_ascii_alphanumeric() || b == b'_' || b == b'/'
                });
                let namespace = functions::NAMESPACE;
                if input[start..].starts_with(namespace) {
                    // A query function or an enumeration: its namespace and name as one word.
                    pos = scan_word(bytes, start + namespace.len(), |b| {
                        b.is_ascii_alphanumeric() || b == b'_'
                    });
                    if bytes.get(pos) == Some(&b'\'') {
                        let type_name = input[start + namespace.len()..pos].to_string();
                        let (member, end) = quoted(input, pos)?;
                        pos = end;
                        tokens.push((Token::Literal(Literal::Enum { type_name, member }), start));
                        continue;
                    }
                }
                let word = &input[start..pos];
                match word {
                    "true" => Token::Literal(Literal::Boolean(true)),
                    "false" => Token::Literal(Literal::Boolean(false)),
                    "null" => Token::Literal(Literal::Null),
                    _ => Token::Ident(word.to_string()),
                }
            }
            _ => {
                let ch = input[pos..].chars().next().expect("not at end");
                return Err(bad(format!(
                    "unexpected character '{ch}' at position {pos}"
                )));
            }
        };
        tokens.push((token, start));
    }
    Ok(tokens)
}

/// The string whose opening quote is at `start` (a quote inside doubled), and where it ends.
fn quoted(input: &str, start: usize) -> Result<(String, usize)> {
    let bytes = input.as_bytes();
    let mut text = String::new();
    let mut pos = start + 1;
    loop {
        let Some(quote) = input.get(pos..).and_then(|rest| rest.find('\'')) else {
            return Err(bad(format!(
                "unterminated string starting at position {start}"
            )));
        };
        text.push_str(&input[pos..pos + quote]);
        pos += quote + 1;
        if bytes.get(pos) == Some(&b'\'') {
            text.push('\'');
            pos += 1;
        } else {
            return Ok((text, pos));
        }
    }
}

fn scan_word(bytes: &[u8], mut pos: usize, accept: impl Fn(u8) -> bool) -> usize {
    while pos < bytes.len() && accept(bytes[pos]) {
        pos += 1;
    }
    pos
}

fn is_guid_at(bytes: &[u8], pos: usize) -> bool {
    let Some(candidate) = bytes.get(pos..pos + 36) else {
        return false;
    };
    let shape_ok = candidate.iter().enumerate().all(|(i, b)| match i {
        8 | 13 | 18 | 23 => *b == b'-',
        _ => b.is_ascii_hexdigit(),
    });
    let ends = bytes
        .get(pos + 36)
        .is_none_or(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-'));
    shape_ok && ends
}

fn number_or_date(word: &str) -> Option<Literal> {
    let b = word.as_bytes();
    if b.len() >= 10 && b[4] == b'-' && b[7] == b'-' && b[..4].iter().all(u8::is_ascii_digit) {
        if b.len() == 10 {
            return normalize_datetime(word).map(|_| Literal::Date(word.to_string()));
        }
        return normalize_datetime_literal(word).map(Literal::DateTime);
    }
    // OData's int64Value: a sign, then digits — leading zeros allowed (`05`, `+5`, `-007`).
    if let Ok(n) = word.parse::<i64>() {
        return Some(Literal::Integer(n));
    }
    let digits = word.strip_prefix(['-', '+']).unwrap_or(word);
    let (mantissa, exponent) = match digits.find(['e', 'E']) {
        Some(i) => (&digits[..i], Some(&digits[i + 1..])),
        None => (digits, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mantissa_ok = !int.is_empty()
        && int.bytes().all(|c| c.is_ascii_digit())
        && frac.bytes().all(|c| c.is_ascii_digit())
        && (mantissa.contains('.') || exponent.is_some())
        && (!mantissa.contains('.') || !frac.is_empty());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.len() <= 4 && e.bytes().all(|c| c.is_ascii_digit())
    });
    let finite = word.parse::<f64>().is_ok_and(f64::is_finite);
    (mantissa_ok && exponent_ok && finite).then(|| Literal::Decimal(word.to_string()))
}

struct Parser<'c> {
    tokens: Vec<(Token, usize)>,
    pos: usize,
    depth: usize,
    /// Input length: the position reported for "the end".
    end: usize,
    /// What query functions are relative to, when the filter is run for a request.
    context: Option<&'c FilterContext>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(t, _)| t)
    }

    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |(_, p)| *p)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).map(|(t, _)| t.clone());
        self.pos += 1;
        token
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Ident(w)) if w == word) {
            self.pos += 1;
            return true;
        }
        false
    }

    fn descend(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > FILTER_DEPTH_MAX {
            return Err(bad(format!("nested deeper than {FILTER_DEPTH_MAX} levels")));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Filter> {
        let mut left = self.and()?;
        while self.keyword("or") {
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter> {
        if self.keyword("not") {
            self.descend()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Filter::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Filter> {
        let at = self.at();
        match self.next() {
            Some(Token::Open) => {
                self.descend()?;
                let inner = self.expr()?;
                self.depth -= 1;
                self.expect(Token::Close)?;
                Ok(inner)
            }
            Some(Token::Ident(name)) if name.starts_with(functions::NAMESPACE) => {
                self.query_function(&name[functions::NAMESPACE.len()..])
            }
            Some(Token::Ident(name)) => {
                let function = match name.as_str() {
                    "contains" => Some(StringFunction::Contains),
                    "startswith" => Some(StringFunction::StartsWith),
                    "endswith" => Some(StringFunction::EndsWith),
                    _ => None,
                };
                if let Some(function) = function.filter(|_| self.peek() == Some(&Token::Open)) {
                    self.expect(Token::Open)?;
                    let attribute = self.member()?;
                    self.expect(Token::Comma)?;
                    let at = self.at();
                    let value = match self.next() {
                        Some(Token::Literal(Literal::String(s))) => s,
                        other => {
                            return Err(bad(format!(
                                "{}() takes a string as its second argument, got {} at position {at}",
                                function.as_str(),
                                other.as_ref().map_or("the end".into(), describe)
                            )));
                        }
                    };
                    self.expect(Token::Close)?;
                    return Ok(Filter::Function {
                        function,
                        attribute,
                        value,
                    });
                }
                if self.keyword("in") {
                    return self.membership(name);
                }
                let op = self.operator(&name)?;
                Ok(match self.operand(op)? {
                    Token::Literal(value) => Filter::Compare {
                        attribute: name,
                        op,
                        value,
                    },
                    Token::Ident(right) => Filter::CompareAttributes {
                        left: name,
                        op,
                        right,
                    },
                    _ => unreachable!("an operand is a member or a literal"),
                })
            }
            Some(Token::Literal(left)) => {
                let op = self.operator(&left.to_string())?;
                match self.operand(op)? {
                    Token::Ident(attribute) => Ok(Filter::Compare {
                        attribute,
                        op: op.flipped(),
                        value: left,
                    }),
                    Token::Literal(right) => constant(&left, op, &right).map(Filter::Constant),
                    _ => unreachable!("an operand is a member or a literal"),
                }
            }
            Some(token) => Err(bad(format!(
                "expected an attribute name, got {} at position {at}",
                describe(&token)
            ))),
            None => Err(bad(format!(
                "unexpected end of expression at position {at}"
            ))),
        }
    }

    /// The comparison operator after the operand `after`.
    fn operator(&mut self, after: &str) -> Result<CompareOp> {
        let at = self.at();
        match self.next() {
            Some(Token::Ident(word)) => CompareOp::ALL
                .iter()
                .find(|(_, w)| *w == word)
                .map(|(op, _)| *op),
            _ => None,
        }
        .ok_or_else(|| {
            bad(format!(
                "expected a comparison operator (eq, ne, gt, ge, lt, le) after '{after}' at position {at}"
            ))
        })
    }

    /// The right operand of `op`: a member or a literal.
    fn operand(&mut self, op: CompareOp) -> Result<Token> {
        let at = self.at();
        match self.next() {
            Some(token @ (Token::Literal(_) | Token::Ident(_))) => Ok(token),
            other => Err(bad(format!(
                "expected a value after '{}' at position {at}, got {}",
                op.as_str(),
                other.as_ref().map_or("the end".into(), describe)
            ))),
        }
    }

    /// The list of `attribute in (…)`, as the `or` of an `eq` for each value.
    fn membership(&mut self, attribute: String) -> Result<Filter> {
        self.expect(Token::Open)?;
        let mut values = Vec::new();
        loop {
            let at = self.at();
            match self.next() {
                Some(Token::Literal(literal)) => values.push(literal),
                other => {
                    return Err(bad(format!(
                        "'in' takes a list of values, got {} at position {at}",
                        other.as_ref().map_or("the end".into(), describe)
                    )));
                }
            }
            if self.peek() == Some(&Token::Comma) {
                self.pos += 1;
            } else {
                break;
            }
        }
        self.expect(Token::Close)?;
        let mut terms = values.into_iter().map(|value| Filter::Compare {
            attribute: attribute.clone(),
            op: CompareOp::Eq,
            value,
        });
        let first = terms.next().expect("a list holds a value");
        Ok(terms.fold(first, |left, right| {
            Filter::Or(Box::new(left), Box::new(right))
        }))
    }

    /// A query function's parameters, `(Name=value, …)`, and the filter it stands for.
    fn query_function(&mut self, name: &str) -> Result<Filter> {
        self.expect(Token::Open)?;
        let mut arguments: Vec<(String, functions::Argument)> = Vec::new();
        loop {
            let at = self.at();
            let parameter = self.member()?;
            if arguments.iter().any(|(seen, _)| *seen == parameter) {
                return Err(bad(format!(
                    "the parameter {parameter} is given twice at position {at}"
                )));
            }
            self.expect(Token::Equals)?;
            let value = if self.peek() == Some(&Token::OpenList) {
                self.pos += 1;
                let mut values = Vec::new();
                while self.peek() != Some(&Token::CloseList) {
                    if !values.is_empty() {
                        self.expect(Token::Comma)?;
                    }
                    values.push(self.literal()?);
                }
                self.pos += 1;
                functions::Argument::List(values)
            } else {
                functions::Argument::One(self.literal()?)
            };
            arguments.push((parameter, value));
            if self.peek() == Some(&Token::Comma) {
                self.pos += 1;
            } else {
                break;
            }
        }
        self.expect(Token::Close)?;
        functions::call(name, arguments, self.context)
    }

    fn literal(&mut self) -> Result<Literal> {
        let at = self.at();
        match self.next() {
            Some(Token::Literal(literal)) => Ok(literal),
            other => Err(bad(format!(
                "expected a value at position {at}, got {}",
                other.as_ref().map_or("the end".into(), describe)
            ))),
        }
    }

    fn member(&mut self) -> Result<String> {
        let at = self.at();
        match self.next() {
            Some(Token::Ident(name)) => Ok(name),
            other => Err(bad(format!(
                "expected an attribute name at position {at}, got {}",
                other.as_ref().map_or("the end".into(), describe)
            ))),
        }
    }

    fn expect(&mut self, want: Token) -> Result<()> {
        let at = self.at();
        match self.next() {
            Some(token) if token == want => Ok(()),
            other => Err(bad(format!(
                "expected {} at position {at}, got {}",
                describe(&want),
                other.as_ref().map_or("the end".into(), describe)
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
