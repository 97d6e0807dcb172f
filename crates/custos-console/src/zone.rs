//! The viewer's time zone: the audit search takes and shows times in it, with UTC beside. The
//! zone is the viewer's choice (an IANA name such as `Europe/Berlin`), remembered in a cookie;
//! the tz database is built into the binary (`jiff`), so a machine without one gives the same
//! answers.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

/// The cookie remembering the viewer's time zone.
pub(crate) const ZONE_COOKIE: &str = "custos_tz";

/// A time zone by its IANA name.
pub(crate) struct Zone {
    name: String,
    tz: TimeZone,
}

impl Zone {
    /// The zone the viewer chose (its cookie), UTC when none or one that is not a zone.
    pub(crate) fn viewer(headers: &axum::http::HeaderMap) -> Zone {
        custos_http::credentials::cookie(headers, ZONE_COOKIE)
            .and_then(|name| Zone::named(name).ok())
            .unwrap_or_else(Zone::utc)
    }

    /// UTC.
    pub(crate) fn utc() -> Zone {
        Zone {
            name: "UTC".into(),
            tz: TimeZone::UTC,
        }
    }

    /// The zone called `name`, or why there is none.
    pub(crate) fn named(name: &str) -> Result<Zone, String> {
        let name = name.trim();
        if name.is_empty() || name.eq_ignore_ascii_case("utc") {
            return Ok(Zone::utc());
        }
        let tz = TimeZone::get(name).map_err(|_| {
            format!("“{name}” is not a time zone; choose one from the list, such as Europe/Berlin")
        })?;
        Ok(Zone {
            name: tz.iana_name().unwrap_or(name).to_string(),
            tz,
        })
    }

    /// The zone's IANA name (`UTC` for UTC).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Whether the zone is UTC (and nothing needs showing twice).
    pub(crate) fn is_utc(&self) -> bool {
        self.name == "UTC"
    }

    /// An instant in this zone, to the second: `2026-12-03 01:12:34`.
    pub(crate) fn show(&self, at: Timestamp) -> String {
        at.to_zoned(self.tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string()
    }

    /// An instant of the API (RFC 3339) in this zone; the text as it is when it is not one.
    pub(crate) fn show_text(&self, utc: &str) -> String {
        utc.parse::<Timestamp>()
            .map_or_else(|_| utc.to_string(), |at| self.show(at))
    }

    /// An instant as the viewer types it in this zone, to the minute: `2026-12-02T01:12`.
    pub(crate) fn typed(&self, at: Timestamp) -> String {
        at.to_zoned(self.tz.clone())
            .strftime("%Y-%m-%dT%H:%M")
            .to_string()
    }

    /// What the viewer typed — a date, or a date and time (`T` or a space between, seconds
    /// optional) — in this zone, as the instant the API takes (RFC 3339, UTC). A date is its
    /// midnight; `to` makes it the end of that day, so the day is included. Text that already
    /// names its zone (`Z`, `+01:00`) is taken as it is.
    pub(crate) fn instant(&self, typed: &str, to: bool) -> Result<Timestamp, String> {
        let typed = typed.trim();
        if let Ok(at) = typed.parse::<Timestamp>() {
            return Ok(at);
        }
        // A date alone is ten characters (`Date`'s parser would take a date and time too, and
        // drop the time).
        let day = if typed.len() == 10 {
            typed.parse::<Date>().ok()
        } else {
            None
        };
        let civil = match day {
            Some(day) => {
                let day = if to {
                    day.tomorrow().map_err(|e| e.to_string())?
                } else {
                    day
                };
                day.to_datetime(jiff::civil::Time::midnight())
            }
            None => typed
                .replacen(' ', "T", 1)
                .parse::<DateTime>()
                .map_err(|_| {
                    format!(
                        "“{typed}” is not a date (2026-11-01) or a date and time (2026-11-01 09:30)"
                    )
                })?,
        };
        civil
            .to_zoned(self.tz.clone())
            .map(|zoned| zoned.timestamp())
            .map_err(|e| e.to_string())
    }
}

/// The `Set-Cookie` remembering zone `name` (a year; `Secure` behind HTTPS).
pub(crate) fn cookie_value(
    name: &str,
    public_url: &str,
) -> Result<axum::http::HeaderValue, axum::http::header::InvalidHeaderValue> {
    let secure = if public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!("{ZONE_COOKIE}={name}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=31536000{secure}")
        .parse()
}

/// Every zone's name, for the viewer to choose from.
pub(crate) fn names() -> Vec<String> {
    let mut names: Vec<String> = jiff::tz::db().available().map(|n| n.to_string()).collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_times_are_the_viewers_and_shown_back_in_their_zone() {
        let berlin = Zone::named("europe/berlin").unwrap();
        assert_eq!(berlin.name(), "Europe/Berlin");
        // Winter: UTC+1. A date is its midnight there; as "To", the end of that day.
        let from = berlin.instant("2026-12-01", false).unwrap();
        assert_eq!(from.to_string(), "2026-11-30T23:00:00Z");
        let to = berlin.instant("2026-12-01", true).unwrap();
        assert_eq!(to.to_string(), "2026-12-01T23:00:00Z");
        // Summer: UTC+2; a date and time, with a space or a T.
        let at = berlin.instant("2026-07-01 09:30", false).unwrap();
        assert_eq!(at.to_string(), "2026-07-01T07:30:00Z");
        assert_eq!(berlin.instant("2026-07-01T09:30", true).unwrap(), at);
        // Text naming its zone is taken as it is.
        assert_eq!(
            berlin
                .instant("2026-07-01T09:30:00Z", false)
                .unwrap()
                .to_string(),
            "2026-07-01T09:30:00Z"
        );
        assert_eq!(
            berlin.show_text("2026-07-01T07:30:00.123456Z"),
            "2026-07-01 09:30:00"
        );
        assert_eq!(berlin.typed(at), "2026-07-01T09:30");
        assert!(berlin.instant("yesterday", false).is_err());
        assert!(Zone::named("Mars/Olympus").is_err());
        assert!(Zone::named("").unwrap().is_utc());
        assert!(names().iter().any(|n| n == "America/New_York"));
        // The end of the year's last day is the next year's first midnight.
        let new_year = Zone::utc().instant("2026-12-31", true).unwrap();
        assert_eq!(new_year.to_string(), "2027-01-01T00:00:00Z");
    }
}
