//! The step between a destructive button and what it does (issue 16): the form posted without
//! `confirmed=yes` answers a page naming the consequence — how many records, events or
//! partitions, what stops — whose button posts the same form again, confirmed, beside a way
//! back. Nothing changes until then, and the page after the change says what was done.

use std::collections::HashMap;

use axum::response::Response;
use maud::{Markup, html};

use super::Console;
use super::guard;
use super::page::Page;

/// The form field a confirmed post carries.
const CONFIRMED: &str = "confirmed";

/// Whether `form` is the confirmed post.
pub(crate) fn confirmed(form: &HashMap<String, String>) -> bool {
    form.get(CONFIRMED).is_some_and(|v| v == "yes")
}

/// `n` and the noun that fits it (`1 entity`, `2 entities`).
pub(crate) fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The confirmation page of one destructive action.
pub(crate) struct Confirmation<'a> {
    /// The question, as the page's title (`Delete this record?`).
    pub(crate) title: &'a str,
    /// The navigation entry the page belongs to.
    pub(crate) section: &'a str,
    /// What happens, in numbers where there are any.
    pub(crate) consequence: Markup,
    /// Where the confirmed form posts.
    pub(crate) action: &'a str,
    /// The form as it was posted (its session token is the console's own).
    pub(crate) form: &'a HashMap<String, String>,
    /// The button's words (`Delete the record`).
    pub(crate) button: &'a str,
    /// Where "Cancel" goes.
    pub(crate) back: &'a str,
}

impl Confirmation<'_> {
    pub(crate) fn render(self, console: &Console) -> Response {
        let mut fields: Vec<(&String, &String)> = self
            .form
            .iter()
            .filter(|(k, _)| k.as_str() != guard::FIELD && k.as_str() != CONFIRMED)
            .collect();
        fields.sort();
        let body = html! {
            div.confirm role="alert" {
                (self.consequence)
            }
            form method="post" action=(self.action) {
                (console.form_field())
                @for (name, value) in &fields {
                    input type="hidden" name=(name) value=(value);
                }
                input type="hidden" name=(CONFIRMED) value="yes";
                div.actions {
                    button.danger type="submit" { (self.button) }
                    a.button.secondary href=(self.back) { "Cancel" }
                }
            }
        };
        Page {
            title: self.title,
            section: self.section,
            body,
        }
        .render(console)
    }
}
