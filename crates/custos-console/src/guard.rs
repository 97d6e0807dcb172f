//! What keeps other sites out of the console (issue 10 §7): every state-changing form carries a
//! token bound to the session (an HMAC of the session id under the server's token key, so it
//! needs no storage and dies with the session), and a form posted from another origin is
//! refused whatever it carries — `SameSite=Strict` alone let a page on another port of the same
//! host post forms. Every response also carries a content security policy without inline script
//! or framing, `nosniff` and a same-origin referrer policy.

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use maud::{Markup, html};
use sha2::Sha256;
use uuid::Uuid;

use super::page::html_response;
use crate::ConsoleState;
use custos_audit::Operation;
use custos_http::auth::authenticate;
use custos_http::context::RequestContext;
use custos_http::credentials::cookie;
use custos_http::draft::EventDraft;

/// The form field that carries the token.
pub(crate) const FIELD: &str = "csrf";

/// The token of the sign-in session `session`.
pub(crate) fn token(key: &[u8], session: Uuid) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac takes any key length");
    mac.update(b"custos console form\0");
    mac.update(session.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// The hidden field every console form carries.
pub(crate) fn field(token: &str) -> Markup {
    html! { input type="hidden" name=(FIELD) value=(token); }
}

/// The origin (`scheme://host[:port]`) of a URL.
fn origin_of(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    Some(parsed.origin().ascii_serialization())
}

/// Whether the request's `Origin` (or, without one, its `Referer`) is this server: the public
/// URL's origin, or the origin of the `Host` the browser addressed. A request with neither
/// header did not come from a page of another site (browsers send `Origin` with every
/// cross-origin form post).
fn same_origin(state: &ConsoleState, headers: &HeaderMap) -> bool {
    let claimed = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    let Some(claimed) = claimed else {
        return true;
    };
    let Some(claimed) = origin_of(claimed) else {
        return false;
    };
    if origin_of(state.public_url()).as_deref() == Some(claimed.as_str()) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    host.is_some_and(|host| {
        ["http", "https"]
            .iter()
            .any(|scheme| origin_of(&format!("{scheme}://{host}")).as_deref() == Some(&claimed))
    })
}

/// The `csrf` field of a form body (URL-encoded or multipart).
async fn posted_token(headers: &HeaderMap, body: &axum::body::Bytes) -> Option<String> {
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if kind.starts_with("multipart/form-data") {
        let mut request = Request::new(axum::body::Body::from(body.clone()));
        *request.headers_mut() = headers.clone();
        let mut multipart = Multipart::from_request(request, &()).await.ok()?;
        while let Ok(Some(part)) = multipart.next_field().await {
            if part.name() == Some(FIELD) {
                return part.text().await.ok();
            }
        }
        return None;
    }
    form_urlencoded::parse(body)
        .find(|(key, _)| key == FIELD)
        .map(|(_, value)| value.into_owned())
}

/// Middleware on the console's routes: a POST other than the sign-in form must come from this
/// server's own pages and carry its session's token; the sign-in form must come from this
/// server. A refusal is recorded (`Denied`) and answered 403.
pub(crate) async fn forms(
    State(state): State<ConsoleState>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, custos_http::listener::BODY_BYTES_MAX)
        .await
        .unwrap_or_default();
    let sign_in = parts.uri.path() == "/ui/login";
    let caller = authenticate(&state, &parts.headers).ok();
    let why = if !same_origin(&state, &parts.headers) {
        Some("the form was posted from another site")
    } else if sign_in {
        None
    } else {
        let expected = cookie(&parts.headers, state.session_cookie())
            .and(caller.as_ref())
            .map(|caller| token(&state.token_key, caller.session_id));
        let posted = posted_token(&parts.headers, &body).await;
        match (expected, posted) {
            (Some(expected), Some(posted)) if expected == posted => None,
            (None, _) => None,
            _ => Some("the form is out of date or was not made by this console"),
        }
    };
    let Some(why) = why else {
        return next
            .run(Request::from_parts(parts, axum::body::Body::from(body)))
            .await;
    };
    if let Some(context) = parts.extensions.get::<RequestContext>() {
        let mut draft = EventDraft::new(Operation::Request, context);
        draft.query = parts.uri.path().to_string();
        if let Some(caller) = &caller {
            draft.set_caller(caller);
        }
        draft.status = custos_audit::ResultStatus::Denied;
        draft.error_code = "Forbidden".into();
        if let Err(error) = custos_http::answer::record_refusal(&state, draft).await {
            return axum::response::IntoResponse::into_response(error);
        }
    }
    let page = html! {
        (maud::DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Refused · Custos" } link rel="stylesheet" href="/ui/style.css"; }
            body { main id="main" {
                h1 { "Refused" }
                p.error role="alert" { (why) ". Nothing was changed; go back, reload the page and try again." }
            } }
        }
    };
    html_response(StatusCode::FORBIDDEN, page)
}

/// Middleware on every response: the content security policy (only this server's own styles,
/// images and forms; no script, no framing), `nosniff`, and a same-origin referrer policy.
pub async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'none'; object-src 'none'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}
