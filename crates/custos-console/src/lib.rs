//! The console (SPEC §10): server-rendered pages under `/ui`, plain HTML and CSS, no
//! front-end build step. Sign-in opens a session (an HttpOnly, SameSite=Strict cookie holding a
//! token like a bearer token); every page reads and writes through the same JSON API as any
//! client — an internal call carrying the browser's session and origin facts — so the console
//! is audited exactly like the API, with origin `WebUI`.
//!
//! The top of the house: it calls the other areas only through the JSON API it is given (and
//! reads compliance's list of preconfigured reports).
#![warn(missing_docs)]

/// Opens the console for a page, or answers with the sign-in redirect.
macro_rules! console {
    ($state:expr, $headers:expr, $context:expr, $here:expr) => {
        match Console::open(&$state, &$headers, $context, &$here) {
            Ok(console) => console,
            Err(redirect) => return axum::response::IntoResponse::into_response(redirect),
        }
    };
}

/// Calls the API; on refusal answers with an error page titled `$title`.
macro_rules! call {
    ($console:expr, $title:expr, $method:expr, $path:expr, $body:expr) => {
        match $console.call($method, &$path, $body, &[]).await {
            Ok(answer) => match answer.error() {
                None => answer,
                Some(message) => return error_page(&$console, $title, &message),
            },
            Err(error) => return error_page(&$console, $title, &error.message),
        }
    };
}

mod admin;
mod audit;
mod chart;
mod confirm;
mod guard;
mod history;
mod page;
mod records;
mod roles;
mod session;
mod settings;
mod siem;
mod summary;
mod users;
mod zone;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use custos_http::AppState;
use serde_json::Value as Json;
use tower::ServiceExt;

use custos_http::auth::authenticate;
use custos_http::context::RequestContext;
use custos_http::credentials::{Caller, cookie};
use custos_http::error::AppError;

pub(crate) use page::{Page, error_page};

/// Most bytes of an API answer the console reads (a page of records or of audit events).
const ANSWER_BYTES_MAX: usize = 64 << 20;

/// The console's state: the shared application state, and the JSON API its pages call.
#[derive(Clone)]
pub struct ConsoleState {
    app: AppState,
    /// The routes of the JSON API, without the connection middleware (the console gives each
    /// call its own request context).
    api: Router,
}

impl std::ops::Deref for ConsoleState {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.app
    }
}

impl ConsoleState {
    /// The console over `app`, calling the JSON API `api`.
    pub fn new(app: &AppState, api: Router) -> ConsoleState {
        ConsoleState {
            app: app.clone(),
            api,
        }
    }
}

/// The console's routes; every form post passes the guard of `guard::forms`.
pub fn routes(state: &ConsoleState) -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/home") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/home") }))
        .route("/ui/style.css", get(page::stylesheet))
        .route("/ui/login", get(session::login_form).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route(
            "/ui/account/password",
            get(session::password_form).post(session::change_password),
        )
        .route("/ui/home", get(page::home))
        .route("/ui/{instance}/records", get(records::entities))
        .route("/ui/{instance}/records/{set}", get(records::grid))
        .route("/ui/{instance}/records/{set}/export", post(records::export))
        .route(
            "/ui/{instance}/records/{set}/views",
            post(records::save_view),
        )
        .route(
            "/ui/{instance}/records/{set}/import",
            get(records::import_form).post(records::import),
        )
        .route(
            "/ui/{instance}/records/{set}/bulk-delete",
            get(records::bulk_delete_form).post(records::bulk_delete),
        )
        .route(
            "/ui/{instance}/records/{set}/new",
            get(records::new_form).post(records::create),
        )
        .route(
            "/ui/{instance}/records/{set}/{id}",
            get(records::form).post(records::save),
        )
        .route(
            "/ui/{instance}/records/{set}/{id}/delete",
            post(records::delete),
        )
        .route(
            "/ui/{instance}/records/{set}/{id}/history",
            get(history::history),
        )
        .route(
            "/ui/{instance}/users",
            get(users::users).post(users::create),
        )
        .route("/ui/{instance}/users/{id}/{action}", post(users::act))
        .route(
            "/ui/{instance}/users/roles/{id}",
            get(roles::role).post(roles::save),
        )
        .route(
            "/ui/{instance}/users/teams/{id}/{action}",
            post(users::team),
        )
        .route(
            "/ui/{instance}/settings/auditing",
            get(settings::auditing).post(settings::save_auditing),
        )
        .route(
            "/ui/{instance}/settings/audit-summary",
            get(summary::summary),
        )
        .route(
            "/ui/{instance}/customizations",
            get(settings::customizations).post(settings::create_entity),
        )
        .route(
            "/ui/{instance}/customizations/{entity}/attributes",
            post(settings::create_attribute),
        )
        .route(
            "/ui/{instance}/customizations/{entity}/attributes/{attribute}/delete",
            post(settings::delete_attribute),
        )
        .route(
            "/ui/{instance}/customizations/{entity}/keys",
            post(settings::create_key),
        )
        .route(
            "/ui/{instance}/customizations/{entity}/keys/{key}/delete",
            post(settings::delete_key),
        )
        .route(
            "/ui/{instance}/customizations/publish",
            post(settings::publish),
        )
        .route(
            "/ui/{instance}/customizations/{entity}",
            get(settings::entity).post(settings::save_entity),
        )
        .route("/ui/admin", get(admin::instances))
        .route("/ui/admin/instances", post(admin::create))
        .route("/ui/admin/instances/{name}", get(admin::instance))
        .route(
            "/ui/admin/instances/{name}/solutions",
            post(admin::import_solution),
        )
        .route(
            "/ui/admin/instances/{name}/solutions/{id}/remove",
            post(admin::remove_solution),
        )
        .route("/ui/admin/instances/{name}/{action}", post(admin::act))
        .route("/ui/audit/search", get(audit::search))
        .route("/ui/audit/exports", post(audit::start_export))
        .route("/ui/audit/exports/{id}", get(audit::export_progress))
        .route(
            "/ui/audit/queries",
            get(audit::queries).post(audit::start_query),
        )
        .route("/ui/audit/queries/{id}", get(audit::query_records))
        .route("/ui/audit/subjects/{record}", get(audit::subject))
        .route(
            "/ui/audit/reports",
            get(audit::reports).post(audit::save_report),
        )
        .route("/ui/audit/reports/{id}", get(audit::report))
        .route("/ui/audit/reports/{id}/delete", post(audit::delete_report))
        .route(
            "/ui/audit/alerts",
            get(audit::alerts).post(audit::save_alert),
        )
        .route("/ui/audit/alerts/{id}/delete", post(audit::delete_alert))
        .route("/ui/audit/settings", post(audit::save_search_switch))
        .route(
            "/ui/audit/retention",
            get(audit::retention).post(audit::save_retention),
        )
        .route("/ui/audit/feeds", get(siem::feeds))
        .route("/ui/audit/feeds/subscription", post(siem::subscription))
        .route("/ui/audit/feeds/streams", post(siem::create_stream))
        .route(
            "/ui/audit/feeds/streams/{id}/delete",
            post(siem::delete_stream),
        )
        .route("/ui/audit/integrity", get(audit::integrity))
        .route("/ui/audit/integrity/verify", post(audit::verify))
        .route("/ui/audit/integrity/rotate", post(audit::rotate_key))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::forms,
        ))
        .layer(DefaultBodyLimit::max(custos_http::listener::BODY_BYTES_MAX))
        .with_state(state.clone())
}

pub use guard::headers as security_headers;

/// A console request: who is signed in, and the facts of the browser's request (recorded in
/// every event the pages cause).
pub(crate) struct Console {
    pub(crate) state: ConsoleState,
    pub(crate) caller: Caller,
    pub(crate) context: RequestContext,
    token: String,
    /// The page's path, which names the instance a page of one instance is about.
    here: String,
    /// The instance the user last worked in (its cookie), for pages that name none.
    remembered: Option<String>,
}

/// The cookie remembering the instance the user last worked in.
const INSTANCE_COOKIE: &str = "custos_instance";

/// What the API answered.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) json: Json,
}

impl Answer {
    /// Reads an API response's JSON.
    pub(crate) async fn read(response: Response) -> Result<Answer, AppError> {
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), ANSWER_BYTES_MAX)
            .await
            .map_err(|e| AppError::bad_request(format!("console answer: {e}")))?;
        let json = if bytes.is_empty() {
            Json::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok(Answer { status, json })
    }

    /// The API's error message, when it refused.
    pub(crate) fn error(&self) -> Option<String> {
        (!self.status.is_success()).then(|| {
            self.json["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("the request failed ({})", self.status))
        })
    }
}

impl Console {
    /// The signed-in console user, or a redirect to the sign-in page.
    pub(crate) fn open(
        state: &ConsoleState,
        headers: &HeaderMap,
        context: RequestContext,
        here: &str,
    ) -> Result<Console, Redirect> {
        let to_login = || {
            let next: String = form_urlencoded::byte_serialize(here.as_bytes()).collect();
            Redirect::to(&format!("/ui/login?next={next}"))
        };
        let name = state.session_cookie();
        let Some(token) = cookie(headers, name) else {
            return Err(to_login());
        };
        let mut only_cookie = HeaderMap::new();
        only_cookie.insert(
            header::COOKIE,
            format!("{name}={token}").parse().map_err(|_| to_login())?,
        );
        let caller = authenticate(state, &only_cookie).map_err(|_| to_login())?;
        Ok(Console {
            state: state.clone(),
            caller,
            context,
            token: token.to_string(),
            here: here.to_string(),
            remembered: cookie(headers, INSTANCE_COOKIE).map(str::to_string),
        })
    }

    /// Calls the API as this session: `path` with its query, an optional JSON body; the
    /// answer as it came (a file download passes through).
    pub(crate) async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Json>,
        extra: &[(&str, &str)],
    ) -> Result<Response, AppError> {
        let mut request = Request::builder().method(method).uri(path).header(
            header::COOKIE,
            format!("{}={}", self.state.session_cookie(), self.token),
        );
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let mut request = request
            .body(body)
            .map_err(|e| AppError::bad_request(format!("console request: {e}")))?;
        request.extensions_mut().insert(self.context.clone());
        Ok(self
            .state
            .api
            .clone()
            .oneshot(request)
            .await
            .expect("routing is infallible"))
    }

    /// Creates a record through the Web API (`POST path` with `body`): its id, from the answer's
    /// `OData-EntityId`, or the API's reason for refusing.
    pub(crate) async fn create(&self, path: &str, body: Json) -> Result<String, String> {
        let response = self
            .call_raw(Method::POST, path, Some(body), &[])
            .await
            .map_err(|error| error.message)?;
        let id = response
            .headers()
            .get("odata-entityid")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit_once('('))
            .map(|(_, id)| id.trim_end_matches(')').to_string());
        match id {
            Some(id) if response.status().is_success() => Ok(id),
            _ => Err(match Answer::read(response).await {
                Ok(answer) => answer
                    .error()
                    .unwrap_or_else(|| "the record was not created".into()),
                Err(error) => error.message,
            }),
        }
    }

    /// Calls the JSON API as this session and reads its JSON answer.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Json>,
        extra: &[(&str, &str)],
    ) -> Result<Answer, AppError> {
        Answer::read(self.call_raw(method, path, body, extra).await?).await
    }

    /// The JSON API's answer to `GET path` (with `extra` headers) as this session, or — when the
    /// call fails or is refused — the page titled `title` that says why.
    pub(crate) async fn read_or_page(
        &self,
        path: &str,
        extra: &[(&str, &str)],
        title: &str,
    ) -> Result<Answer, Box<Response>> {
        let answer = self
            .call(Method::GET, path, None, extra)
            .await
            .map_err(|error| Box::new(error_page(self, title, &error.message)))?;
        match answer.error() {
            Some(message) => Err(Box::new(error_page(self, title, &message))),
            None => Ok(answer),
        }
    }

    /// The hidden field with this session's form token, which every state-changing form
    /// carries.
    pub(crate) fn form_field(&self) -> maud::Markup {
        guard::field(&guard::token(&self.state.token_key, self.caller.session_id))
    }

    /// The instance the console works in when a page names none.
    pub(crate) fn default_instance(&self) -> String {
        let names: Vec<String> = self
            .state
            .directory
            .instances()
            .map(|list| list.into_iter().map(|i| i.name).collect())
            .unwrap_or_default();
        // The first run's instance stays the default when others are made (by name, a new
        // one could come first and move the whole console to it).
        if names.iter().any(|n| n == "main") {
            return "main".to_string();
        }
        names
            .into_iter()
            .next()
            .unwrap_or_else(|| "main".to_string())
    }

    /// Whether the user's roles in `instance` grant `privilege` on entity `entity` (a logical
    /// name; an instance-wide privilege on `organization`). The API decides every call; this
    /// only spares a page a link or control that would be refused.
    pub(crate) fn holds(
        &self,
        instance: &str,
        privilege: custos_records::Privilege,
        entity: &str,
    ) -> bool {
        let Some(open) = self.state.instance(instance) else {
            return false;
        };
        let roles = self.caller.security_roles(&self.state, &open);
        open.store
            .catalog()
            .entity(entity)
            .is_some_and(|entity| custos_records::allows(&roles, privilege, entity))
    }

    /// Whether the user works in `instance`: their roles there (their own, their teams', or a
    /// global admin's) let them read at least one entity. The instance's pages are offered only
    /// then — an Audit Reader's role reads no records, and every page of them would be refused.
    pub(crate) fn works_in(&self, instance: &str) -> bool {
        let Some(open) = self.state.instance(instance) else {
            return false;
        };
        let roles = self.caller.security_roles(&self.state, &open);
        open.store
            .catalog()
            .entities()
            .any(|entity| custos_records::allows(&roles, custos_records::Privilege::Read, entity))
    }

    /// The instance the page's path names (`/ui/<instance>/…`), if it names one.
    pub(crate) fn named_instance(&self) -> Option<&str> {
        self.here
            .strip_prefix("/ui/")
            .and_then(|rest| rest.split(['/', '?']).next())
            .filter(|name| {
                self.state
                    .directory
                    .instances()
                    .is_ok_and(|list| list.iter().any(|i| i.name == *name))
            })
    }

    /// The instance this page is about: the one its path names, else the one the user last
    /// worked in, else the default.
    pub(crate) fn current_instance(&self) -> String {
        if let Some(named) = self.named_instance() {
            return named.to_string();
        }
        self.remembered
            .clone()
            .filter(|name| self.works_in(name))
            .unwrap_or_else(|| self.default_instance())
    }

    /// The instances the user works in, by name.
    pub(crate) fn instances_worked_in(&self) -> Vec<String> {
        self.state
            .directory
            .instances()
            .map(|list| {
                list.into_iter()
                    .map(|i| i.name)
                    .filter(|name| self.works_in(name))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The `Set-Cookie` remembering the instance this page names, when it names one.
    pub(crate) fn remember_instance(&self) -> Option<header::HeaderValue> {
        let named = self.named_instance()?;
        let secure = if self.state.public_url().starts_with("https://") {
            "; Secure"
        } else {
            ""
        };
        format!(
            "{INSTANCE_COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=31536000{secure}",
            encode(named)
        )
        .parse()
        .ok()
    }
}

/// Field `name` of a form or query, trimmed; empty when absent.
pub(crate) fn trimmed(fields: &std::collections::HashMap<String, String>, name: &str) -> String {
    fields
        .get(name)
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// A JSON value as text for a page: strings as they are, null as nothing.
pub(crate) fn text(value: &Json) -> String {
    match value {
        Json::Null => String::new(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JSON value as text for an auditor to read ([`text`], then [`visible`]).
pub(crate) fn readable(value: &Json) -> String {
    visible(&text(value))
}

pub(crate) use custos_audit::visible;

/// Encodes a value for a URL query.
pub(crate) fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The query string of `pairs`.
pub(crate) fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        out.append_pair(k, v);
    }
    out.finish()
}

/// A redirect after a form post (303, so the browser follows with GET).
pub(crate) fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}
