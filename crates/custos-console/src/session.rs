//! Signing in to and out of the console. A session is the same signed token as a bearer
//! token, kept in an HttpOnly, SameSite=Strict cookie (Secure behind an https public URL);
//! every form also carries the session's token (`guard`); signing out revokes the session.

use axum::Form;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use axum::http::Method;
use serde_json::json;

use super::page::html_response;
use super::{Console, Page};
use crate::ConsoleState;
use custos_http::auth::authenticate;
use custos_http::context::RequestContext;
use custos_http::credentials::cookie;
use custos_http::sign_in::{SignInError, password_principal, sign_in, sign_out};

/// Where to go after signing in: only a console path of this server.
fn safe_next(next: Option<&str>) -> &str {
    next.filter(|n| n.starts_with("/ui/") && !n.starts_with("//") && !n.contains("://"))
        .unwrap_or("/ui/home")
}

fn login_page(next: &str, problem: Option<&str>, user: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in · Custos" }
                link rel="stylesheet" href="/ui/style.css";
            }
            body {
                main.login id="main" {
                    h1 { "Sign in to Custos" }
                    @if let Some(problem) = problem {
                        p.error role="alert" { (problem) }
                    }
                    form method="post" action="/ui/login" {
                        input type="hidden" name="next" value=(next);
                        p {
                            label for="username" { "User name" }
                            input id="username" name="username" type="text" autocomplete="username" required value=(user);
                        }
                        p {
                            label for="password" { "Password" }
                            input id="password" name="password" type="password" autocomplete="current-password" required;
                        }
                        p { button type="submit" { "Sign in" } }
                    }
                    p.muted { "Signing in and out is recorded in the audit log." }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct NextQuery {
    next: Option<String>,
    changed: Option<String>,
}

/// `GET /ui/login`.
pub(crate) async fn login_form(Query(query): Query<NextQuery>) -> Response {
    let changed = query.changed.is_some().then_some(
        "Your password was changed and every session of yours ended: sign in with the new one.",
    );
    html_response(
        StatusCode::OK,
        login_page(safe_next(query.next.as_deref()), changed, ""),
    )
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    username: String,
    password: String,
    next: Option<String>,
}

/// The session cookie: HttpOnly, SameSite=Strict, and Secure when the console is served over
/// TLS (its public URL is https).
fn session_cookie(state: &ConsoleState, token: &str, max_age_secs: i64) -> HeaderValue {
    let secure = if state.public_url().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}",
        state.session_cookie()
    )
    .parse()
    .expect("a token is a valid cookie value")
}

/// `POST /ui/login`.
pub(crate) async fn login(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref()).to_string();
    let found = password_principal(&state, &form.username);
    match sign_in(
        &state,
        &context,
        form.username.clone(),
        found,
        form.password,
    )
    .await
    {
        Ok((_, token, lifetime)) => {
            let mut response = Redirect::to(&next).into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, session_cookie(&state, &token, lifetime));
            response
        }
        Err(SignInError::Refused) => html_response(
            StatusCode::UNAUTHORIZED,
            login_page(
                &next,
                Some("The user name or password is wrong."),
                &form.username,
            ),
        ),
        Err(SignInError::Throttled(secs)) => {
            let mut response = html_response(
                StatusCode::TOO_MANY_REQUESTS,
                login_page(
                    &next,
                    Some(&format!(
                        "Too many failed sign-ins. Try again in {secs} seconds."
                    )),
                    &form.username,
                ),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            response
        }
        Err(SignInError::Unavailable(error)) => error.into_response(),
    }
}

/// `POST /ui/logout`.
pub(crate) async fn logout(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
) -> Response {
    if cookie(&headers, state.session_cookie()).is_some()
        && let Ok(caller) = authenticate(&state, &headers)
        && let Err(error) = sign_out(&state, &context, &caller).await
    {
        return error.into_response();
    }
    let mut response = Redirect::to("/ui/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, "", 0));
    response
}

/// `GET /ui/account/password`: the signed-in user changes their own password.
pub(crate) async fn password_form(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
) -> Response {
    let console = console!(state, headers, context, "/ui/account/password");
    password_page(&console, None)
}

fn password_page(console: &Console, problem: Option<&str>) -> Response {
    let body = html! {
        @if let Some(problem) = problem {
            p.error role="alert" { (problem) }
        }
        p { "After the change every session of yours ends, this one too: sign in again with the new password." }
        form method="post" action="/ui/account/password" {
            (console.form_field())
            p {
                label for="current" { "Current password" }
                input id="current" name="current" type="password" autocomplete="current-password" required;
            }
            p {
                label for="new" { "New password (at least 8 characters)" }
                input id="new" name="new" type="password" autocomplete="new-password" minlength="8" required;
            }
            p {
                label for="again" { "New password again" }
                input id="again" name="again" type="password" autocomplete="new-password" minlength="8" required;
            }
            div.actions { button type="submit" { "Change password" } }
        }
    };
    Page {
        title: "Change password",
        section: "",
        body,
    }
    .render(console)
}

#[derive(Deserialize)]
pub(crate) struct PasswordForm {
    current: String,
    new: String,
    again: String,
}

/// `POST /ui/account/password`.
pub(crate) async fn change_password(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Form(form): Form<PasswordForm>,
) -> Response {
    let console = console!(state, headers, context, "/ui/account/password");
    if form.new != form.again {
        return password_page(&console, Some("The two new passwords differ."));
    }
    let answer = console
        .call(
            Method::POST,
            "/api/me/changePassword",
            Some(json!({"currentPassword": form.current, "newPassword": form.new})),
            &[],
        )
        .await;
    match answer {
        Ok(answer) => match answer.error() {
            None => {
                let mut response = Redirect::to("/ui/login?changed=1").into_response();
                response
                    .headers_mut()
                    .insert(header::SET_COOKIE, session_cookie(&state, "", 0));
                response
            }
            Some(message) => password_page(&console, Some(&message)),
        },
        Err(error) => password_page(&console, Some(&error.message)),
    }
}
