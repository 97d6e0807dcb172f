//! Sign-in names and passwords: what a new principal may be called, and how a name typed at
//! sign-in is matched.
//!
//! A sign-in name is stored in Unicode NFKC form, at most [`SIGN_IN_NAME_BYTES_MAX`] bytes,
//! without control, format (zero-width, bidirectional), private-use or unassigned characters and
//! without white space at either end. A new name that looks like an existing one — the same
//! skeleton of Unicode TS #39 after lower-casing, such as `admin` and `аdmin` with a Cyrillic
//! `а`, or `rn` and `m` — is refused, so nobody can pass for another in the audit trail.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::error::{AppError, ErrorCode};

/// Longest sign-in name, in bytes (also the most of a tried name a failed sign-in records).
pub const SIGN_IN_NAME_BYTES_MAX: usize = 256;
/// Shortest password of a user.
pub const PASSWORD_CHARS_MIN: usize = 8;
/// Longest password, in bytes (hashing cost grows with it).
pub const PASSWORD_BYTES_MAX: usize = 256;

/// Whether `c` may stand in a sign-in name at all.
fn allowed(c: char) -> bool {
    !matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::PrivateUse
            | GeneralCategory::Surrogate
            | GeneralCategory::Unassigned
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// A name as typed at sign-in, in the form names are stored in: NFKC, without white space at
/// either end.
pub fn typed(name: &str) -> String {
    name.nfkc().collect::<String>().trim().to_string()
}

/// At most [`SIGN_IN_NAME_BYTES_MAX`] bytes of a name that was tried, for the record of a
/// failed sign-in (cut at a character boundary).
pub fn as_tried(name: &str) -> String {
    let mut end = name.len().min(SIGN_IN_NAME_BYTES_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

/// Checks a new principal's sign-in name; returns its stored form.
pub fn new_sign_in_name(raw: &str) -> Result<String, AppError> {
    let name: String = raw.nfkc().collect();
    let bad = |why: &str| AppError::bad_request(format!("the sign-in name {why}"));
    if name.is_empty() {
        return Err(bad("is empty"));
    }
    if name.len() > SIGN_IN_NAME_BYTES_MAX {
        return Err(bad(&format!(
            "is longer than {SIGN_IN_NAME_BYTES_MAX} bytes"
        )));
    }
    if name.trim() != name {
        return Err(bad("begins or ends with white space"));
    }
    if let Some(c) = name.chars().find(|c| !allowed(*c)) {
        return Err(bad(&format!(
            "holds U+{:04X}, a control, zero-width or unassigned character",
            c as u32
        )));
    }
    Ok(name)
}

/// What two names that look alike have in common: the TS #39 skeleton of the lower-cased name.
fn look(name: &str) -> String {
    unicode_security::skeleton(&name.nfkc().collect::<String>().to_lowercase()).collect()
}

/// Refuses `name` (a new sign-in name) when it is, or looks like, one of `existing`.
pub fn check_distinct<'a>(
    name: &str,
    existing: impl IntoIterator<Item = &'a str>,
) -> Result<(), AppError> {
    let wanted = look(name);
    for other in existing {
        if look(other) == wanted {
            let how = if other.eq_ignore_ascii_case(name) {
                "is taken"
            } else {
                "looks like the existing name"
            };
            return Err(AppError::new(
                ErrorCode::Conflict,
                format!("the sign-in name '{name}' {how} '{other}'"),
            ));
        }
    }
    Ok(())
}

/// Checks a new password.
pub fn check_password(password: &str, what: &str) -> Result<(), AppError> {
    if password.chars().count() < PASSWORD_CHARS_MIN || password.len() > PASSWORD_BYTES_MAX {
        return Err(AppError::bad_request(format!(
            "'{what}' must be {PASSWORD_CHARS_MIN} characters to {PASSWORD_BYTES_MAX} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stored_normalised_and_checked() {
        assert_eq!(
            new_sign_in_name("ann@contoso.test").unwrap(),
            "ann@contoso.test"
        );
        // Full-width letters are their compatibility form.
        assert_eq!(new_sign_in_name("ａｎｎ").unwrap(), "ann");
        for bad in [
            "",
            " ann",
            "ann\t",
            "an\u{200b}n",
            "ann\u{202e}",
            "a\u{0}n",
            "a\u{e000}",
            &"a".repeat(257),
        ] {
            assert!(new_sign_in_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(typed("  ａdmin "), "admin");
        assert_eq!(as_tried(&"é".repeat(200)).len(), 256);
    }

    #[test]
    fn a_name_that_looks_like_another_is_refused() {
        let existing = ["admin", "ann@contoso.test"];
        for clash in ["ADMIN", "\u{0430}dmin", "adrnin", "ann@contoso.tеst"] {
            assert!(check_distinct(clash, existing).is_err(), "{clash}");
        }
        for fine in ["bob", "admin2", "ann@contoso.org"] {
            assert!(check_distinct(fine, existing).is_ok(), "{fine}");
        }
    }

    #[test]
    fn passwords_have_bounds() {
        assert!(check_password("short", "password").is_err());
        assert!(check_password(&"x".repeat(257), "password").is_err());
        assert!(check_password("long enough", "password").is_ok());
    }
}
