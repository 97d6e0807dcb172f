//! Users, teams and their security roles in an instance (issue 16): the users with their
//! state, a form to create one with a role, and for each: disable or enable, reset the
//! password, give a role, delete (asked first); the teams, a form to create one, and for each:
//! add a member, give a role; the security roles (`roles.rs`). Every action is the Web API's own
//! call, refused there when the caller's roles do not cover the user's (the grant ceiling), and
//! recorded as it records them.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use custos_records::Privilege;
use maud::html;
use serde_json::json;

use super::confirm::{Confirmation, confirmed};
use super::page::notice;
use super::{Console, Page, encode, error_page, see_other, text};
use crate::ConsoleState;
use custos_http::context::RequestContext;

/// Most users the page lists.
const USERS_SHOWN: u32 = 500;

impl Console {
    /// Whether the user manages users in `instance` (the ManageUsers privilege there).
    pub(crate) fn manages_users(&self, instance: &str) -> bool {
        self.holds(instance, Privilege::ManageUsers, "systemuser")
    }
}

/// `GET /ui/{instance}/users`.
pub(crate) async fn users(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/{instance}/users");
    let console = console!(state, headers, context, here);
    page(&console, &instance, &params, None, &HashMap::new()).await
}

/// The users page, with `problem` and the create form as the user left it when a create was
/// refused.
async fn page(
    console: &Console,
    instance: &str,
    params: &HashMap<String, String>,
    problem: Option<&str>,
    left: &HashMap<String, String>,
) -> Response {
    let here = format!("/ui/{instance}/users");
    let api = format!("/{instance}/api/data/v9.2");
    let listed = call!(
        console,
        "Users",
        Method::GET,
        format!(
            "{api}/systemusers?$select=fullname,domainname,isdisabled&$orderby=domainname&$top={USERS_SHOWN}"
        ),
        None
    );
    let roles = call!(
        console,
        "Users",
        Method::GET,
        format!("{api}/roles?$select=name&$orderby=name"),
        None
    );
    let teams = call!(
        console,
        "Users",
        Method::GET,
        format!("{api}/teams?$select=name,description&$orderby=name"),
        None
    );
    let teams = teams.json["value"].as_array().cloned().unwrap_or_default();
    let users = listed.json["value"].as_array().cloned().unwrap_or_default();
    let roles = roles.json["value"].as_array().cloned().unwrap_or_default();
    let value = |k: &str| left.get(k).cloned().unwrap_or_default();
    let outcome = [
        ("created", "Created"),
        ("disabled", "Disabled"),
        ("enabled", "Enabled"),
        ("reset", "Password reset for"),
        ("assigned", "Role given to"),
        ("removed", "Deleted"),
        ("team", "Created the team"),
        ("member", "Added to the team:"),
        ("teamrole", "Role given to the team"),
    ]
    .iter()
    .find_map(|(key, done)| params.get(*key).map(|upn| format!("{done} {upn}.")));
    let role_select = |id: &str, selected: &str| {
        html! {
            select id=(id) name="role" {
                @for role in &roles {
                    @let role_id = text(&role["roleid"]);
                    option value=(role_id) selected[role_id == selected] { (text(&role["name"])) }
                }
            }
        }
    };
    // Giving a user or a team (`whose`, posting under `base`) a role.
    let role_form = |base: &str, whose: &str, select_id: &str| {
        html! {
            form method="post" action={ (base) "/roles" } {
                (console.form_field())
                input type="hidden" name="upn" value=(whose);
                label.check for=(select_id) { "Role" }
                (role_select(select_id, ""))
                button.secondary type="submit" aria-label={ "Give " (whose) " the role" } { "Give" }
            }
        }
    };
    let body = html! {
        (notice(outcome.as_deref()))
        @if let Some(problem) = problem { p.error role="alert" { (problem) } }
        p { "Users who hold a role in " strong { (instance) } ". You manage those whose roles yours cover; every change is recorded and ends the user's sessions where it takes something away." }
        table {
            caption { (users.len()) " users" }
            thead { tr { th scope="col" { "User" } th scope="col" { "Name" } th scope="col" { "State" } th scope="col" { "Actions" } } }
            tbody {
                @for user in &users {
                    @let id = text(&user["systemuserid"]);
                    @let upn = text(&user["domainname"]);
                    @let disabled = user["isdisabled"] == true;
                    @let base = format!("{here}/{}", encode(&id));
                    tr {
                        td { (upn) }
                        td { (text(&user["fullname"])) }
                        td { @if disabled { "disabled" } @else { "active" } }
                        td {
                            div.actions {
                                form method="post" action={ (base) "/state" } {
                                    (console.form_field())
                                    input type="hidden" name="upn" value=(upn);
                                    input type="hidden" name="disabled" value=(if disabled { "false" } else { "true" });
                                    button.secondary type="submit" aria-label={ (if disabled { "Enable " } else { "Disable " }) (upn) } { @if disabled { "Enable" } @else { "Disable" } }
                                }
                                form method="post" action={ (base) "/password" } {
                                    (console.form_field())
                                    input type="hidden" name="upn" value=(upn);
                                    label.check for={ "pw-" (id) } { "New password" }
                                    input id={ "pw-" (id) } name="password" type="password" autocomplete="new-password" minlength="8" required;
                                    button.secondary type="submit" aria-label={ "Reset the password of " (upn) } { "Reset" }
                                }
                                (role_form(&base, &upn, &format!("role-{id}")))
                                form method="post" action={ (base) "/delete" } {
                                    (console.form_field())
                                    input type="hidden" name="upn" value=(upn);
                                    button.danger type="submit" aria-label={ "Delete " (upn) } { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Teams" }
        table {
            caption { (teams.len()) " teams: a member holds the team's roles too" }
            thead { tr { th scope="col" { "Team" } th scope="col" { "Description" } th scope="col" { "Actions" } } }
            tbody {
                @for team in &teams {
                    @let id = text(&team["teamid"]);
                    @let name = text(&team["name"]);
                    @let base = format!("{here}/teams/{}", encode(&id));
                    tr {
                        td { (name) }
                        td { (text(&team["description"])) }
                        td {
                            div.actions {
                                form method="post" action={ (base) "/members" } {
                                    (console.form_field())
                                    input type="hidden" name="upn" value=(name);
                                    label.check for={ "member-" (id) } { "Member" }
                                    select id={ "member-" (id) } name="user" {
                                        @for user in &users { option value=(text(&user["systemuserid"])) { (text(&user["domainname"])) } }
                                    }
                                    button.secondary type="submit" aria-label={ "Add the user to " (name) } { "Add" }
                                }
                                (role_form(&base, &name, &format!("team-role-{id}")))
                            }
                        }
                    }
                }
            }
        }
        form method="post" action={ (here) "/teams/new/create" } {
            (console.form_field())
            div.actions {
                label.check for="team-name" { "New team" }
                input id="team-name" name="upn" type="text" required maxlength="200";
                button.secondary type="submit" { "Create team" }
            }
        }
        (super::roles::section(&here, console, &roles))
        h2 { "New user" }
        form method="post" action=(here) {
            (console.form_field())
            p { label for="upn" { "User principal name" } input id="upn" name="upn" type="email" required value=(value("upn")); }
            p { label for="fullname" { "Full name" } input id="fullname" name="fullname" type="text" value=(value("fullname")); }
            p { label for="password" { "Password" } input id="password" name="password" type="password" autocomplete="new-password" minlength="8" required; }
            p { label for="new-role" { "Security role" } (role_select("new-role", &value("role"))) }
            div.actions { button type="submit" { "Create user" } }
        }
    };
    Page {
        title: "Users and roles",
        section: "users",
        body,
    }
    .render_refused(console, problem.is_some())
}

/// `POST /ui/{instance}/users`: creates a user and gives them a role.
pub(crate) async fn create(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/{instance}/users");
    let console = console!(state, headers, context, here);
    let field = |k: &str| {
        form.get(k)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let api = format!("/{instance}/api/data/v9.2");
    let upn = field("upn");
    let fullname = Some(field("fullname"))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| upn.clone());
    let body = json!({"domainname": upn, "fullname": fullname, "password": form.get("password").cloned().unwrap_or_default()});
    let made = async {
        let id = console.create(&format!("{api}/systemusers"), body).await?;
        match give_role(&console, &api, &id, &field("role")).await {
            None => Ok(()),
            Some(message) => Err(format!(
                "{upn} was created, but the role was not given: {message}"
            )),
        }
    }
    .await;
    match made {
        Ok(()) => see_other(&format!("/ui/{instance}/users?created={}", encode(&upn))),
        Err(message) => {
            // The form again as the user left it (never the password).
            let mut left = form.clone();
            left.remove("password");
            page(&console, &instance, &HashMap::new(), Some(&message), &left).await
        }
    }
}

/// Gives user `id` role `role`; the API's refusal, if any.
async fn give_role(console: &Console, api: &str, id: &str, role: &str) -> Option<String> {
    associate(
        console,
        &format!("{api}/systemusers({id})/systemuserroles_association"),
        &format!("{api}/roles({role})"),
    )
    .await
}

/// Adds `reference` to the many-to-many relation at `relation`; the API's refusal, if any.
async fn associate(console: &Console, relation: &str, reference: &str) -> Option<String> {
    let body = json!({"@odata.id": reference});
    match console
        .call(Method::POST, &format!("{relation}/$ref"), Some(body), &[])
        .await
    {
        Ok(answer) => answer.error(),
        Err(error) => Some(error.message),
    }
}

/// `POST /ui/{instance}/users/teams/{id}/{action}`: `create` (`id` is `new`; the name in
/// `upn`), `members` (add `user`), `roles` (give `role`).
pub(crate) async fn team(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, id, action)): Path<(String, String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let list = format!("/ui/{instance}/users");
    let console = console!(state, headers, context, list);
    let field = |k: &str| {
        form.get(k)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let name = field("upn");
    let api = format!("/{instance}/api/data/v9.2");
    let team = format!("{api}/teams({})", encode(&id));
    let refused = match action.as_str() {
        "create" => match console
            .call(
                Method::POST,
                &format!("{api}/teams"),
                Some(json!({"name": name})),
                &[],
            )
            .await
        {
            Ok(answer) => answer.error(),
            Err(error) => Some(error.message),
        },
        "members" => {
            associate(
                &console,
                &format!("{team}/teammembership_association"),
                &format!("{api}/systemusers({})", field("user")),
            )
            .await
        }
        "roles" => {
            associate(
                &console,
                &format!("{team}/teamroles_association"),
                &format!("{api}/roles({})", field("role")),
            )
            .await
        }
        other => Some(format!("no action '{other}'")),
    };
    match refused {
        Some(message) => error_page(&console, "Teams", &message),
        None => {
            let key = match action.as_str() {
                "create" => "team",
                "members" => "member",
                _ => "teamrole",
            };
            see_other(&format!("{list}?{key}={}", encode(&name)))
        }
    }
}

/// `POST /ui/{instance}/users/{id}/{action}`: `state` (disable or enable), `password`,
/// `roles` (give one), `delete` (asked first).
pub(crate) async fn act(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, id, action)): Path<(String, String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let list = format!("/ui/{instance}/users");
    let console = console!(state, headers, context, list);
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let upn = field("upn");
    let api = format!("/{instance}/api/data/v9.2");
    let user = format!("{api}/systemusers({})", encode(&id));
    let done = |key: &str| see_other(&format!("{list}?{key}={}", encode(&upn)));
    match action.as_str() {
        "state" => {
            let disabled = field("disabled") == "true";
            call!(
                console,
                "Users",
                Method::PATCH,
                user,
                Some(json!({"isdisabled": disabled}))
            );
            done(if disabled { "disabled" } else { "enabled" })
        }
        "password" => {
            call!(
                console,
                "Users",
                Method::POST,
                format!("{user}/Microsoft.Dynamics.CRM.ResetPassword"),
                Some(json!({"NewPassword": field("password")}))
            );
            done("reset")
        }
        "roles" => match give_role(&console, &api, &id, &field("role")).await {
            None => done("assigned"),
            Some(message) => error_page(&console, "Users", &message),
        },
        "delete" => {
            if !confirmed(&form) {
                return Confirmation {
                    title: "Delete this user?",
                    section: "users",
                    consequence: html! {
                        p { "The user " strong { (upn) } " is deleted with every security role and team membership they hold in " strong { (instance) } "; their sessions end and they can no longer sign in." }
                        p { "Everything they did stays in the audit log; the deletion is recorded with the user's values." }
                    },
                    action: &format!("{list}/{}/delete", encode(&id)),
                    form: &form,
                    button: "Delete the user",
                    back: &list,
                }
                .render(&console);
            }
            call!(console, "Users", Method::DELETE, user, None);
            done("removed")
        }
        other => error_page(&console, "Users", &format!("no action '{other}'")),
    }
}
