//! Signing in and out: the OAuth 2.0 token endpoint (password and client credentials grants),
//! the console's sign-in, sign-out (which revokes the session) and a user's own password
//! change — each recorded.

use axum::Form;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use custos_audit::{Operation, ResultStatus};
use custos_records::Principal;
use serde_json::json;
use uuid::Uuid;

use crate::auth::authenticate;
use crate::context::RequestContext;
use crate::credentials::{Caller, Claims, hash_secret, issue_token, verify_secret};
use crate::draft::EventDraft;
use crate::error::{AppError, ErrorCode, blocking};
use crate::names;
use crate::state::AppState;

/// The token request form (RFC 6749 §4.3 and §4.4).
#[derive(Debug, serde::Deserialize)]
pub struct TokenRequest {
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// `POST /oauth2/token`.
pub async fn token(
    State(state): State<AppState>,
    Extension(context): Extension<RequestContext>,
    form: Result<Form<TokenRequest>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    };
    let (claimed, found, secret) = match form.grant_type.as_deref() {
        Some("password") => {
            let (Some(username), Some(password)) = (form.username, form.password) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "username and password are required",
                );
            };
            let found = password_principal(&state, &username);
            (username, found, password)
        }
        Some("client_credentials") => {
            let (Some(client_id), Some(client_secret)) = (form.client_id, form.client_secret)
            else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "client_id and client_secret are required",
                );
            };
            let found = state.directory.by_client_id(&client_id);
            (
                client_id,
                found.map(|p| (p.secret_hash.clone(), p)),
                client_secret,
            )
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant_type must be password or client_credentials",
            );
        }
    };
    match sign_in(&state, &context, claimed, found, secret).await {
        Ok((_, token, lifetime)) => axum::Json(
            json!({"access_token": token, "token_type": "Bearer", "expires_in": lifetime}),
        )
        .into_response(),
        Err(SignInError::Refused) => crate::answer::recorded(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the user name, password or client secret is wrong",
        )),
        Err(SignInError::Throttled(secs)) => {
            let mut response = oauth_error(
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                &format!("too many failed sign-ins; try again in {secs} seconds"),
            );
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
            crate::answer::recorded(response)
        }
        Err(SignInError::Unavailable(error)) => error.into_response(),
    }
}

/// Why a sign-in gave no session.
pub enum SignInError {
    /// Wrong name or secret, or a disabled principal (recorded as a failed sign-in).
    Refused,
    /// Too many failed sign-ins of the name or from the address: try again after these
    /// seconds (recorded; no secret was checked).
    Throttled(i64),
    /// The audit log could not record the attempt.
    Unavailable(AppError),
}

/// The principal with name `upn` (as typed: it is normalised first) and a password, for a
/// password sign-in.
pub fn password_principal(state: &AppState, upn: &str) -> Option<(Option<String>, Principal)> {
    state
        .directory
        .by_upn(&names::typed(upn))
        .filter(|p| p.client_id.is_none())
        .map(|p| (p.password_hash.clone(), p))
}

/// A hash that no secret matches, checked when the name is unknown so that an unknown name
/// costs the same work as a known one (its timing tells nothing).
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_secret(&Uuid::new_v4().to_string()))
}

/// Checks `secret` against the principal `found` for name `claimed`, unless the name or the
/// client's address is locked out; records the sign-in (a failure always, within the address's
/// recording budget; a success when user access auditing is on somewhere) and opens a session:
/// (caller, signed token, lifetime in seconds).
pub async fn sign_in(
    state: &AppState,
    context: &RequestContext,
    claimed: String,
    found: Option<(Option<String>, Principal)>,
    secret: String,
) -> Result<(Caller, String, i64), SignInError> {
    let tried = names::as_tried(&names::typed(&claimed));
    let session = Uuid::new_v4();
    let mut draft = EventDraft::new(Operation::SignIn, context);
    draft.session_id = session.to_string();
    let now = state.clock.now_secs();
    if let Some(wait) = state.sign_ins.locked(&tried, &context.client_ip, now).await {
        draft.user_upn = tried;
        draft.status = ResultStatus::Denied;
        draft.error_code = "Throttled".into();
        draft.details = json!({"RetryAfterSeconds": wait}).to_string();
        crate::answer::record_refusal(state, draft)
            .await
            .map_err(SignInError::Unavailable)?;
        return Err(SignInError::Throttled(wait));
    }
    let metrics = state.metrics.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let (hash, principal) = match found {
            Some((Some(hash), principal)) => (hash, Some(principal)),
            _ => (decoy_hash().to_string(), None),
        };
        let matches = verify_secret(&secret, &hash);
        metrics.count_password_check();
        principal.filter(|p| matches && !p.disabled)
    })
    .await
    .expect("secret verification does not panic");

    let Some(principal) = checked else {
        // A failed sign-in is always recorded, with (at most 256 bytes of) the name tried.
        state
            .sign_ins
            .failed(&tried, &context.client_ip, state.clock.now_secs())
            .await;
        draft.user_upn = tried;
        draft.status = ResultStatus::Failed;
        draft.error_code = "invalid_grant".into();
        crate::answer::record_refusal(state, draft)
            .await
            .map_err(SignInError::Unavailable)?;
        return Err(SignInError::Refused);
    };
    state.sign_ins.succeeded(&tried).await;
    let caller = Caller {
        principal,
        session_id: session,
    };
    if state.any_user_access_auditing() {
        draft.set_caller(&caller);
        state
            .record(draft)
            .await
            .map_err(SignInError::Unavailable)?;
    }
    let lifetime = state.config.token_lifetime_secs as i64;
    let claims = Claims {
        principal: caller.principal.id,
        session,
        generation: caller.principal.token_generation,
    };
    let token = issue_token(&state.token_key, claims, state.clock.now_secs(), lifetime);
    Ok((caller, token, lifetime))
}

/// Ends the caller's session: revokes it (its tokens are refused from now on) and records the
/// sign-out when user access auditing is on somewhere.
pub async fn sign_out(
    state: &AppState,
    context: &RequestContext,
    caller: &Caller,
) -> Result<(), AppError> {
    if state.any_user_access_auditing() {
        let mut draft = EventDraft::new(Operation::SignOut, context);
        draft.set_caller(caller);
        state.record(draft).await?;
    }
    let expires = state.clock.now_secs() + state.config.token_lifetime_secs as i64;
    let state = state.clone();
    let session = caller.session_id;
    blocking(move || state.revoke(session, expires)).await
}

/// `POST /oauth2/logout`: ends the session of the bearer token.
pub async fn logout(
    State(state): State<AppState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let caller = authenticate(&state, &headers)?;
        sign_out(&state, &context, &caller).await
    }
    .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

/// `POST /api/me/changePassword` with `{"currentPassword", "newPassword"}` (the Microsoft Graph
/// names): the signed-in user changes their own password; every session of theirs ends, this
/// one too (`ChangePassword`). A wrong current password counts as a failed sign-in.
pub async fn change_password(
    State(state): State<AppState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut draft = EventDraft::new(Operation::ChangePassword, &context);
    let work = async {
        let caller = authenticate(&state, &headers)?;
        draft.set_caller(&caller);
        draft.record_ids = vec![caller.principal.id];
        let body: serde_json::Value = crate::body::parse_json(&body)
            .map_err(|e| AppError::bad_request(format!("the body is not valid JSON: {e}")))?;
        let field = |key: &str| {
            body[key]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| AppError::bad_request(format!("'{key}' is required")))
        };
        let (current, new) = (field("currentPassword")?, field("newPassword")?);
        crate::names::check_password(&new, "newPassword")?;
        let Some(hash) = caller.principal.password_hash.clone() else {
            return Err(AppError::bad_request(
                "an application user has a client secret, not a password",
            ));
        };
        let upn = caller.principal.upn.clone();
        if let Some(wait) = state
            .sign_ins
            .locked(&upn, &context.client_ip, state.clock.now_secs())
            .await
        {
            return Err(AppError::new(
                ErrorCode::TooManyRequests,
                format!("too many failed sign-ins; try again in {wait} seconds"),
            ));
        }
        let (matches, new_hash) = blocking(move || {
            Ok::<_, AppError>((verify_secret(&current, &hash), hash_secret(&new)))
        })
        .await?;
        if !matches {
            state
                .sign_ins
                .failed(&upn, &context.client_ip, state.clock.now_secs())
                .await;
            return Err(AppError::forbidden("the current password is wrong"));
        }
        draft.details = json!({"SessionsEnded": true}).to_string();
        state.record(draft.clone()).await?;
        let worker = state.clone();
        let id = caller.principal.id;
        blocking(move || worker.directory.set_password(id, &new_hash)).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    crate::answer::answer(&state, draft, work).await
}

/// The routes of authentication: the token endpoint (`POST /oauth2/token`), sign-out
/// (`POST /oauth2/logout`) and a user's own password change (`POST /api/me/changePassword`).
pub fn routes(state: &AppState) -> axum::Router {
    use axum::routing::post;
    axum::Router::new()
        .route("/oauth2/token", post(token))
        .route("/oauth2/logout", post(logout))
        .route("/api/me/changePassword", post(change_password))
        .with_state(state.clone())
}
