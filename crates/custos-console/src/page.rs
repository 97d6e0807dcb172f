//! The console's page frame — header, navigation, the signed-in user, sign-out — its style
//! sheet, the home page and the error page.

use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::Console;
use crate::ConsoleState;
use custos_http::context::RequestContext;

const STYLE: &str = include_str!("style.css");

/// `GET /ui/style.css`.
pub(crate) async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        STYLE,
    )
        .into_response()
}

/// A console page: its title, the navigation entry it belongs to, and its body.
pub(crate) struct Page<'a> {
    pub(crate) title: &'a str,
    pub(crate) section: &'a str,
    pub(crate) body: Markup,
}

impl Page<'_> {
    /// The page answered 400 when `refused` (it shows why a form was refused, the form kept as
    /// the user left it), 200 otherwise.
    pub(crate) fn render_refused(self, console: &Console, refused: bool) -> Response {
        let mut response = self.render(console);
        if refused {
            *response.status_mut() = StatusCode::BAD_REQUEST;
        }
        response
    }

    /// The whole HTML document for `console`'s user.
    pub(crate) fn render(self, console: &Console) -> Response {
        let instance = console.current_instance();
        let reader = console.caller.can_read_audit(&console.state);
        // The instance's pages only for those who hold a role in it: anyone else would be
        // refused there, and each refusal is a Denied event in the log.
        let member = console.works_in(&instance);
        // The other instances the user works in: the header's switcher.
        let others: Vec<String> = console
            .instances_worked_in()
            .into_iter()
            .filter(|name| *name != instance)
            .collect();
        let links: Vec<(&str, String, &str)> = [
            ("records", format!("/ui/{instance}/records"), "Records"),
            ("users", format!("/ui/{instance}/users"), "Users"),
            (
                "settings",
                format!("/ui/{instance}/settings/auditing"),
                "Auditing settings",
            ),
            (
                "customizations",
                format!("/ui/{instance}/customizations"),
                "Customizations",
            ),
        ]
        .into_iter()
        .filter(|_| member)
        // Users and roles only for those who manage users there (the API refuses others).
        .filter(|(key, _, _)| *key != "users" || console.manages_users(&instance))
        .chain(
            [("admin", "/ui/admin".to_string(), "Admin center")]
                .into_iter()
                .filter(|_| console.is_global_admin()),
        )
        .chain(
            [
                ("search", "/ui/audit/search".to_string(), "Audit search"),
                ("reports", "/ui/audit/reports".to_string(), "Reports"),
                ("alerts", "/ui/audit/alerts".to_string(), "Alerts"),
                ("retention", "/ui/audit/retention".to_string(), "Retention"),
                ("feeds", "/ui/audit/feeds".to_string(), "SIEM feeds"),
                ("integrity", "/ui/audit/integrity".to_string(), "Integrity"),
            ]
            .into_iter()
            .filter(|_| reader),
        )
        .collect();
        let markup = html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (self.title) " · Custos" }
                    link rel="stylesheet" href="/ui/style.css";
                }
                body {
                    a.skip href="#main" { "Skip to content" }
                    header.top {
                        a.brand href="/ui/home" { "Custos" }
                        @if others.is_empty() {
                            span.instance { "Instance " strong { (instance) } }
                        } @else {
                            details.instance {
                                summary { "Instance " strong { (instance) } }
                                ul aria-label="Switch instance" {
                                    @for other in &others {
                                        li { a href={ "/ui/" (other) "/records" } { (other) } }
                                    }
                                }
                            }
                        }
                        nav aria-label="Main" {
                            ul {
                                @for (key, href, label) in &links {
                                    li {
                                        @if *key == self.section {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                        form.signout method="post" action="/ui/logout" {
                            (console.form_field())
                            a.user href="/ui/account/password" title="Change password" { (console.caller.principal.upn) }
                            button type="submit" { "Sign out" }
                        }
                    }
                    main id="main" {
                        h1 { (self.title) }
                        (self.body)
                    }
                }
            }
        };
        let mut response = html_response(StatusCode::OK, markup);
        if let Some(cookie) = console.remember_instance() {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        response
    }
}

/// An HTML response that is never cached (pages show audit data and session state). Every
/// table sits in a box of its own that scrolls sideways when the table is wider than the
/// screen, so a page never does (on a phone). The text is maud's, where anything a user wrote
/// is escaped (`&lt;`), so `<table` is only ever one of the console's own tables.
pub(crate) fn html_response(status: StatusCode, markup: Markup) -> Response {
    let html = markup
        .into_string()
        .replace("<table", "<div class=\"table-scroll\"><table")
        .replace("</table>", "</table></div>");
    (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

/// A page saying what went wrong, with the API's message.
pub(crate) fn error_page(console: &Console, title: &str, message: &str) -> Response {
    Page {
        title,
        section: "",
        body: html! { p.error role="alert" { (message) } },
    }
    .render_refused(console, true)
}

/// A banner for the outcome of a form the page was redirected from.
pub(crate) fn notice(text: Option<&str>) -> Markup {
    html! {
        @if let Some(text) = text {
            p.notice role="status" { (text) }
        }
    }
}

/// `GET /ui/home`.
pub(crate) async fn home(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
) -> Response {
    let console = console!(state, headers, context, "/ui/home");
    let instance = console.default_instance();
    let reader = console.caller.can_read_audit(&state);
    let member = console.works_in(&instance);
    let body = html! {
        p { "Signed in as " strong { (console.caller.principal.upn) } ". Every action you take here is recorded in the audit log, with this browser as its origin." }
        div.cards {
            @if member {
            section.card {
                h2 { a href={ "/ui/" (instance) "/records" } { "Records" } }
                p { "Accounts, contacts and every other entity of instance " code { (instance) } ": views with paging, record forms." }
            }
            section.card {
                h2 { a href={ "/ui/" (instance) "/settings/auditing" } { "Auditing settings" } }
                p { "Start auditing, read auditing and user access auditing for the instance." }
            }
            section.card {
                h2 { a href={ "/ui/" (instance) "/customizations" } { "Customizations" } }
                p { "Each entity's auditing, retrieve and retrieve multiple auditing; publish to apply." }
            }
            }
            @if reader {
                section.card {
                    h2 { a href="/ui/audit/search" { "Audit search" } }
                    p { "Who did what, when and from where; export any result." }
                }
                section.card {
                    h2 { a href="/ui/audit/reports" { "Reports" } }
                    p { "The nine Dynamics 365 activity reports, with charts." }
                }
                section.card {
                    h2 { a href="/ui/audit/integrity" { "Integrity" } }
                    p { "The latest signed checkpoint of the tamper-evident log." }
                }
            }
        }
    };
    Page {
        title: "Home",
        section: "",
        body,
    }
    .render(&console)
}
