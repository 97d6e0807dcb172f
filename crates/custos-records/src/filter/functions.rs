//! Dataverse's query functions in a `$filter`: `Microsoft.Dynamics.CRM.LastXDays(PropertyName=
//! 'createdon',PropertyValue=7)` and their kin — relative dates, `In` and `Between`, the
//! caller's own id. Each is read into the plain comparisons of [`Filter`] when the filter is
//! parsed, so the SQL of both stores, the checks against the metadata and the paging see
//! nothing new.
//!
//! What "today" and "now" are comes from the request ([`FilterContext`]): the moment it
//! arrived, in UTC. Dataverse reads them in the user's time zone; Custos keeps no time zone
//! per user, so a day here is a UTC day (ARCHITECTURE.md, "Query functions").
//!
//! The ranges (start included, end excluded unless said):
//! - `Today`, `Yesterday`, `Tomorrow`: that UTC day.
//! - `Last7Days`: the seven days ending with today; `Next7Days`: the seven starting with it.
//! - `ThisMonth`, `LastMonth`, `NextMonth`, `ThisYear`, `LastYear`, `NextYear`: calendar ones.
//! - `LastXHours(X)`: from X hours ago to now (both included); `NextXHours(X)`: from now to X
//!   hours ahead.
//! - `LastXDays`, `LastXWeeks`, `LastXMonths`, `LastXYears` (X): from the start of the day X
//!   units back to now (included); `NextX…`: from now to the end of the day X units ahead.
//! - `OlderThanXMinutes` … `OlderThanXYears` (X): before the moment X units ago.
//! - `On`, `OnOrAfter`, `OnOrBefore` (a date): that day, from it, up to its end.
//! - `In`, `NotIn` (`PropertyValues`, a list): equal to one of them, or not;
//!   `Between`, `NotBetween` (two values): from the first to the second, both included, or not.
//! - `EqualUserId`, `NotEqualUserId`: the caller's `systemuserid`, or not.
//! - `EqualUserOrUserTeams`: owned by the caller or a team of theirs — the caller, since
//!   records here are owned by users only (`ownerid` names a `systemuser`); `EqualUserTeams`:
//!   owned by a team of theirs — no record.
//!
//! A `Not…` function is the `not` of its positive one, by OData's rules (a row whose value is
//! null is kept). Any other function of the namespace is refused by name.

use time::{Date, Duration, Month, OffsetDateTime, Time, UtcOffset};
use uuid::Uuid;

use super::{CompareOp, Filter, Literal, bad};
use crate::Result;

/// The namespace a query function is called in.
pub(super) const NAMESPACE: &str = "Microsoft.Dynamics.CRM.";

/// Largest count of a `LastX…`, `NextX…` or `OlderThanX…` function (about 27 years of days;
/// a larger one would reach outside the dates the stores hold).
const COUNT_MAX: i64 = 10_000;

/// What a filter's query functions are relative to: the moment of the request and its user.
#[derive(Debug, Clone, Copy)]
pub struct FilterContext {
    /// When the request arrived.
    pub now: OffsetDateTime,
    /// The `systemuserid` of the user it acts as.
    pub user: Uuid,
}

impl FilterContext {
    /// A context for checking a stored query's shape without running it (a view as it is
    /// saved): this moment, and no user. Each run reads the query against its own request.
    pub fn checking() -> FilterContext {
        FilterContext {
            now: OffsetDateTime::now_utc(),
            user: Uuid::nil(),
        }
    }
}

/// What a query function takes besides `PropertyName` (`$metadata` declares it so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryFunctionValue {
    /// Nothing more (`Today`).
    Nothing,
    /// `PropertyValue`, a count of units (`LastXDays`).
    Count,
    /// `PropertyValue`, a date (`On`).
    Date,
    /// `PropertyValues`, a list of values (`In`).
    List,
}

/// Every query function read here, by name without its namespace, with what it takes; any
/// other is refused by name. `$metadata` declares these.
pub const QUERY_FUNCTIONS: &[(&str, QueryFunctionValue)] = {
    use QueryFunctionValue::*;
    &[
        ("Today", Nothing),
        ("Yesterday", Nothing),
        ("Tomorrow", Nothing),
        ("Last7Days", Nothing),
        ("Next7Days", Nothing),
        ("ThisMonth", Nothing),
        ("LastMonth", Nothing),
        ("NextMonth", Nothing),
        ("ThisYear", Nothing),
        ("LastYear", Nothing),
        ("NextYear", Nothing),
        ("LastXHours", Count),
        ("LastXDays", Count),
        ("LastXWeeks", Count),
        ("LastXMonths", Count),
        ("LastXYears", Count),
        ("NextXHours", Count),
        ("NextXDays", Count),
        ("NextXWeeks", Count),
        ("NextXMonths", Count),
        ("NextXYears", Count),
        ("OlderThanXMinutes", Count),
        ("OlderThanXHours", Count),
        ("OlderThanXDays", Count),
        ("OlderThanXWeeks", Count),
        ("OlderThanXMonths", Count),
        ("OlderThanXYears", Count),
        ("On", Date),
        ("OnOrAfter", Date),
        ("OnOrBefore", Date),
        ("In", List),
        ("NotIn", List),
        ("Between", List),
        ("NotBetween", List),
        ("EqualUserId", Nothing),
        ("NotEqualUserId", Nothing),
        ("EqualUserOrUserTeams", Nothing),
        ("EqualUserTeams", Nothing),
    ]
};

/// A parameter's value as written: one literal or a list (`['a','b']`).
#[derive(Debug, Clone)]
pub(super) enum Argument {
    One(Literal),
    List(Vec<Literal>),
}

/// The filter that the function `name` (without its namespace) with `arguments` stands for.
pub(super) fn call(
    name: &str,
    arguments: Vec<(String, Argument)>,
    context: Option<&FilterContext>,
) -> Result<Filter> {
    let mut call = Call {
        name,
        arguments,
        context,
    };
    let filter = call.read()?;
    if let Some((unread, _)) = call.arguments.first() {
        return Err(bad(format!(
            "{NAMESPACE}{name} takes no parameter '{unread}'"
        )));
    }
    Ok(filter)
}

struct Call<'a> {
    name: &'a str,
    arguments: Vec<(String, Argument)>,
    context: Option<&'a FilterContext>,
}

#[derive(Clone, Copy)]
enum Unit {
    Minutes,
    Hours,
    Days,
    Weeks,
    Months,
    Years,
}

impl Call<'_> {
    fn read(&mut self) -> Result<Filter> {
        let name = self.name;
        if !QUERY_FUNCTIONS.iter().any(|(known, _)| *known == name) {
            return Err(unsupported(name));
        }
        if let Some(unit) = name
            .strip_prefix("OlderThanX")
            .and_then(|rest| unit(rest, true))
        {
            let (attribute, count) = (self.property()?, self.count()?);
            let moment = self.back(self.now()?, unit, count)?;
            return Ok(compare(attribute, CompareOp::Lt, moment));
        }
        if let Some(unit) = name
            .strip_prefix("LastX")
            .and_then(|rest| unit(rest, false))
        {
            let (attribute, count) = (self.property()?, self.count()?);
            let now = self.now()?;
            let start = match unit {
                Unit::Hours => self.back(now, unit, count)?,
                _ => midnight(self.back(now, unit, count)?.date()),
            };
            return Ok(both(
                compare(attribute.clone(), CompareOp::Ge, start),
                compare(attribute, CompareOp::Le, now),
            ));
        }
        if let Some(unit) = name
            .strip_prefix("NextX")
            .and_then(|rest| unit(rest, false))
        {
            let (attribute, count) = (self.property()?, self.count()?);
            let now = self.now()?;
            let ahead = self.back(now, unit, -count)?;
            return Ok(match unit {
                Unit::Hours => both(
                    compare(attribute.clone(), CompareOp::Ge, now),
                    compare(attribute, CompareOp::Le, ahead),
                ),
                _ => both(
                    compare(attribute.clone(), CompareOp::Ge, now),
                    compare(attribute, CompareOp::Lt, self.day_after(ahead.date())?),
                ),
            });
        }
        let days = |from: i64, to: i64| -> Result<(OffsetDateTime, OffsetDateTime)> {
            let today = self.now()?.date();
            Ok((self.day(today, from)?, self.day(today, to)?))
        };
        let (start, end) = match name {
            "Today" => days(0, 1)?,
            "Yesterday" => days(-1, 0)?,
            "Tomorrow" => days(1, 2)?,
            "Last7Days" => days(-6, 1)?,
            "Next7Days" => days(0, 7)?,
            "ThisMonth" => self.months(0)?,
            "LastMonth" => self.months(-1)?,
            "NextMonth" => self.months(1)?,
            "ThisYear" => self.years(0)?,
            "LastYear" => self.years(-1)?,
            "NextYear" => self.years(1)?,
            "On" | "OnOrAfter" | "OnOrBefore" => {
                let attribute = self.property()?;
                let day = self.date()?;
                let (start, end) = (midnight(day), self.day_after(day)?);
                return Ok(match name {
                    "On" => range(attribute, start, end),
                    "OnOrAfter" => compare(attribute, CompareOp::Ge, start),
                    _ => compare(attribute, CompareOp::Lt, end),
                });
            }
            "In" | "NotIn" => {
                let attribute = self.property()?;
                let values = self.values()?;
                let any = values
                    .into_iter()
                    .map(|value| Filter::Compare {
                        attribute: attribute.clone(),
                        op: CompareOp::Eq,
                        value,
                    })
                    .reduce(|left, right| Filter::Or(Box::new(left), Box::new(right)))
                    .ok_or_else(|| bad(format!("{NAMESPACE}{name} needs at least one value")))?;
                return Ok(negated(name == "NotIn", any));
            }
            "Between" | "NotBetween" => {
                let attribute = self.property()?;
                let values = self.values()?;
                let [low, high]: [Literal; 2] = values.try_into().map_err(|_| {
                    bad(format!(
                        "{NAMESPACE}{name} takes exactly two PropertyValues"
                    ))
                })?;
                let between = both(
                    Filter::Compare {
                        attribute: attribute.clone(),
                        op: CompareOp::Ge,
                        value: low,
                    },
                    Filter::Compare {
                        attribute,
                        op: CompareOp::Le,
                        value: high,
                    },
                );
                return Ok(negated(name == "NotBetween", between));
            }
            "EqualUserId" | "NotEqualUserId" | "EqualUserOrUserTeams" => {
                let attribute = self.property()?;
                let user = self.context("the caller")?.user;
                let equal = Filter::Compare {
                    attribute,
                    op: CompareOp::Eq,
                    value: Literal::Guid(user),
                };
                return Ok(negated(name == "NotEqualUserId", equal));
            }
            "EqualUserTeams" => {
                self.property()?;
                self.context("the caller")?;
                return Ok(Filter::Constant(false));
            }
            _ => return Err(unsupported(name)),
        };
        Ok(range(self.property()?, start, end))
    }

    fn context(&self, what: &str) -> Result<&FilterContext> {
        self.context.ok_or_else(|| {
            bad(format!(
                "{NAMESPACE}{} needs {what}, which this query is not run for",
                self.name
            ))
        })
    }

    fn now(&self) -> Result<OffsetDateTime> {
        Ok(self
            .context("the time of the request")?
            .now
            .to_offset(UtcOffset::UTC))
    }

    /// Takes the parameter `key`, which must have been given.
    fn take(&mut self, key: &str) -> Result<Argument> {
        let at = self
            .arguments
            .iter()
            .position(|(name, _)| name == key)
            .ok_or_else(|| {
                bad(format!(
                    "{NAMESPACE}{} needs the parameter {key}",
                    self.name
                ))
            })?;
        Ok(self.arguments.remove(at).1)
    }

    /// `PropertyName`: the attribute, as a string.
    fn property(&mut self) -> Result<String> {
        match self.take("PropertyName")? {
            Argument::One(Literal::String(name)) => Ok(name),
            _ => Err(bad(format!(
                "{NAMESPACE}{}'s PropertyName is an attribute's name in quotes",
                self.name
            ))),
        }
    }

    /// `PropertyValue`: a count of units, 0 to [`COUNT_MAX`] (a number, or one in quotes).
    fn count(&mut self) -> Result<i64> {
        let count = match self.take("PropertyValue")? {
            Argument::One(Literal::Integer(n)) => Some(n),
            Argument::One(Literal::String(text)) => text.trim().parse().ok(),
            _ => None,
        };
        count
            .filter(|n| (0..=COUNT_MAX).contains(n))
            .ok_or_else(|| {
                bad(format!(
                    "{NAMESPACE}{}'s PropertyValue is a whole number from 0 to {COUNT_MAX}",
                    self.name
                ))
            })
    }

    /// `PropertyValue`: a date, bare or in quotes (a date-time names its UTC day).
    fn date(&mut self) -> Result<Date> {
        let text = match self.take("PropertyValue")? {
            Argument::One(
                Literal::Date(text) | Literal::DateTime(text) | Literal::String(text),
            ) => text,
            _ => String::new(),
        };
        text.get(..10)
            .and_then(|day| {
                Date::parse(
                    day,
                    time::macros::format_description!("[year]-[month]-[day]"),
                )
                .ok()
            })
            .ok_or_else(|| {
                bad(format!(
                    "{NAMESPACE}{}'s PropertyValue is a date (YYYY-MM-DD)",
                    self.name
                ))
            })
    }

    /// `PropertyValues`: a list. A value in quotes is read as the type of the attribute it is
    /// compared with (Dataverse's lists are of strings), any other as written.
    fn values(&mut self) -> Result<Vec<Literal>> {
        match self.take("PropertyValues")? {
            Argument::List(values) => Ok(values
                .into_iter()
                .map(|value| match value {
                    Literal::String(text) => Literal::Text(text),
                    other => other,
                })
                .collect()),
            Argument::One(_) => Err(bad(format!(
                "{NAMESPACE}{}'s PropertyValues is a list: ['a','b']",
                self.name
            ))),
        }
    }

    /// `moment` moved `count` units back (forward when negative); months and years keep the
    /// day of the month where the target month has it, else take its last day.
    fn back(&self, moment: OffsetDateTime, unit: Unit, count: i64) -> Result<OffsetDateTime> {
        let out_of_range = || {
            bad(format!(
                "{NAMESPACE}{} reaches outside the dates a record may hold",
                self.name
            ))
        };
        let by = |duration: Option<Duration>| {
            duration
                .and_then(|d| moment.checked_sub(d))
                .ok_or_else(out_of_range)
        };
        match unit {
            Unit::Minutes => by(Some(Duration::minutes(count))),
            Unit::Hours => by(Some(Duration::hours(count))),
            Unit::Days => by(Some(Duration::days(count))),
            Unit::Weeks => by(Some(Duration::weeks(count))),
            Unit::Months | Unit::Years => {
                let months = if matches!(unit, Unit::Years) {
                    count * 12
                } else {
                    count
                };
                let date = shift_months(moment.date(), -months).ok_or_else(out_of_range)?;
                Ok(moment.replace_date(date))
            }
        }
    }

    /// Midnight of the day `offset` days from `today`.
    fn day(&self, today: Date, offset: i64) -> Result<OffsetDateTime> {
        today
            .checked_add(Duration::days(offset))
            .map(midnight)
            .ok_or_else(|| {
                bad(format!(
                    "{NAMESPACE}{} reaches past the calendar",
                    self.name
                ))
            })
    }

    /// Midnight at the end of `day`.
    fn day_after(&self, day: Date) -> Result<OffsetDateTime> {
        self.day(day, 1)
    }

    /// The calendar month `offset` months from this one.
    fn months(&self, offset: i64) -> Result<(OffsetDateTime, OffsetDateTime)> {
        let first = self.now()?.date().replace_day(1).expect("day 1 exists");
        let start = shift_months(first, offset);
        let end = shift_months(first, offset + 1);
        start
            .zip(end)
            .map(|(start, end)| (midnight(start), midnight(end)))
            .ok_or_else(|| {
                bad(format!(
                    "{NAMESPACE}{} reaches past the calendar",
                    self.name
                ))
            })
    }

    /// The calendar year `offset` years from this one.
    fn years(&self, offset: i64) -> Result<(OffsetDateTime, OffsetDateTime)> {
        let year = i64::from(self.now()?.year()) + offset;
        let first = |year: i64| {
            i32::try_from(year)
                .ok()
                .and_then(|year| Date::from_calendar_date(year, Month::January, 1).ok())
        };
        first(year)
            .zip(first(year + 1))
            .map(|(start, end)| (midnight(start), midnight(end)))
            .ok_or_else(|| {
                bad(format!(
                    "{NAMESPACE}{} reaches past the calendar",
                    self.name
                ))
            })
    }
}

fn unsupported(name: &str) -> crate::Error {
    bad(format!(
        "the query function {NAMESPACE}{name} is not supported (README.md and $metadata list those that are)"
    ))
}

/// The unit a function's name ends with (`Days` of `LastXDays`); minutes only for
/// `OlderThanX…`, as Dataverse has them.
fn unit(rest: &str, minutes: bool) -> Option<Unit> {
    Some(match rest {
        "Minutes" if minutes => Unit::Minutes,
        "Hours" => Unit::Hours,
        "Days" => Unit::Days,
        "Weeks" => Unit::Weeks,
        "Months" => Unit::Months,
        "Years" => Unit::Years,
        _ => return None,
    })
}

/// `date` moved by `months` calendar months, its day kept or cut to the month's last.
fn shift_months(date: Date, months: i64) -> Option<Date> {
    let index = i64::from(date.year()) * 12 + i64::from(u8::from(date.month())) - 1 + months;
    let year = i32::try_from(index.div_euclid(12)).ok()?;
    let month = Month::try_from(u8::try_from(index.rem_euclid(12) + 1).ok()?).ok()?;
    let day = date.day().min(month.length(year));
    Date::from_calendar_date(year, month, day).ok()
}

fn midnight(day: Date) -> OffsetDateTime {
    day.with_time(Time::MIDNIGHT).assume_utc()
}

/// A date-time literal for `moment` (UTC, to the nanosecond, trailing zeros dropped).
fn moment_literal(moment: OffsetDateTime) -> Literal {
    let text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        moment.year(),
        u8::from(moment.month()),
        moment.day(),
        moment.hour(),
        moment.minute(),
        moment.second(),
        moment.nanosecond()
    );
    let trimmed = text.trim_end_matches('Z').trim_end_matches('0');
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    Literal::DateTime(format!("{trimmed}Z"))
}

fn compare(attribute: String, op: CompareOp, moment: OffsetDateTime) -> Filter {
    Filter::Compare {
        attribute,
        op,
        value: moment_literal(moment),
    }
}

/// From `start` (included) to `end` (excluded).
fn range(attribute: String, start: OffsetDateTime, end: OffsetDateTime) -> Filter {
    both(
        compare(attribute.clone(), CompareOp::Ge, start),
        compare(attribute, CompareOp::Lt, end),
    )
}

fn both(left: Filter, right: Filter) -> Filter {
    Filter::And(Box::new(left), Box::new(right))
}

fn negated(not: bool, filter: Filter) -> Filter {
    if not {
        Filter::Not(Box::new(filter))
    } else {
        filter
    }
}
