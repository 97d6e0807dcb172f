//! Authentication: argon2 password and secret hashes, HMAC-SHA256-signed expiring tokens —
//! as a bearer token for the API, or in the console's session cookie — the OAuth 2.0 token
//! endpoint (password and client credentials grants), sign-out (which revokes the session),
//! and the caller a request acts as.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::Form;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use custos_audit::{Operation, ResultStatus, UserType};
use custos_records::{BuiltInRole, Principal, ROLE_IDS, SecurityRole};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use uuid::Uuid;

use crate::context::RequestContext;
use crate::draft::EventDraft;
use crate::error::{AppError, ErrorCode};
use crate::names;
use crate::state::{AppState, Instance, blocking};

/// Who a request acts as.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The signed-in principal.
    pub principal: Principal,
    /// The sign-in session the token belongs to.
    pub session_id: Uuid,
}

impl Caller {
    /// The Microsoft 365 user type.
    pub fn user_type(&self) -> UserType {
        UserType::from_code(self.principal.user_type).unwrap_or(UserType::Regular)
    }

    /// The roles the caller holds in `instance`, their own and their teams' (a global admin
    /// is a System Administrator everywhere).
    pub fn security_roles(&self, state: &AppState, instance: &Instance) -> Vec<SecurityRole> {
        // A global admin, and a support engineer the tenant let in, act as System
        // Administrator in every instance.
        if self.principal.global_admin || self.user_type() == UserType::DcAdmin {
            return vec![SecurityRole::BuiltIn(BuiltInRole::SystemAdministrator)];
        }
        let custom = instance.custom_roles.load();
        state
            .directory
            .effective_roles(self.principal.id, &instance.name)
            .iter()
            .filter_map(|id| {
                ROLE_IDS
                    .iter()
                    .find(|(_, built_in)| built_in == id)
                    .map(|(role, _)| SecurityRole::BuiltIn(*role))
                    .or_else(|| custom.get(id).cloned().map(SecurityRole::Custom))
            })
            .collect()
    }

    /// Whether the caller may use `instance` at all (its metadata, `WhoAmI`, records shared
    /// with them): a global admin, or someone holding a security role in it other than the
    /// tenant-wide audit roles. Support engineers are let in by their grants instead.
    pub fn uses_instance(&self, state: &AppState, instance: &Instance) -> bool {
        self.principal.global_admin
            || state
                .directory
                .effective_roles(self.principal.id, &instance.name)
                .iter()
                .any(|role| {
                    !ROLE_IDS.iter().any(|(built_in, id)| {
                        id == role
                            && matches!(
                                built_in,
                                BuiltInRole::AuditReader | BuiltInRole::AuditManager
                            )
                    })
                })
    }

    /// Whether the caller may manage the audit log (Audit Manager or global admin): retention,
    /// saved reports, search on and off.
    pub fn can_manage_audit(&self, state: &AppState) -> bool {
        self.user_type() != UserType::DcAdmin
            && self.can_read_audit(state)
            && (self.principal.global_admin
                || ROLE_IDS.iter().any(|(role, id)| {
                    *role == BuiltInRole::AuditManager
                        && state.directory.has_role_anywhere(self.principal.id, *id)
                }))
    }

    /// Whether the caller may use the audit API (Audit Reader, Audit Manager or global admin);
    /// never a support engineer, whatever roles they were given.
    pub fn can_read_audit(&self, state: &AppState) -> bool {
        self.user_type() != UserType::DcAdmin
            && (self.principal.global_admin
                || ROLE_IDS.iter().any(|(role, id)| {
                    matches!(role, BuiltInRole::AuditReader | BuiltInRole::AuditManager)
                        && state.directory.has_role_anywhere(self.principal.id, *id)
                }))
    }
}

/// Hashes a password or client secret into a PHC string.
pub fn hash_secret(secret: &str) -> String {
    let salt =
        SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .expect("argon2 hashing with default parameters")
        .to_string()
}

fn verify_secret(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &hash)
            .is_ok()
    })
}

/// What a token says: who, which sign-in session, and the principal's token generation it was
/// issued in (a password change or reset, or disabling, moves the generation on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    /// The principal it was issued to.
    pub principal: Uuid,
    /// The sign-in session (recorded as `SessionId`).
    pub session: Uuid,
    /// The principal's token generation when it was issued.
    pub generation: u32,
}

/// Issues a token for `claims`, valid for `lifetime_secs` from `now_secs`.
pub fn issue_token(key: &[u8], claims: Claims, now_secs: i64, lifetime_secs: i64) -> String {
    let claims = json!({
        "sub": claims.principal,
        "sid": claims.session,
        "gen": claims.generation,
        "iat": now_secs,
        "exp": now_secs + lifetime_secs,
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signature = URL_SAFE_NO_PAD.encode(sign(key, payload.as_bytes()));
    format!("{payload}.{signature}")
}

fn sign(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac takes any key length");
    mac.update(payload);
    mac.finalize().into_bytes().to_vec()
}

/// Checks a token's signature and expiry; returns what it says.
pub fn verify_token(key: &[u8], token: &str, now_secs: i64) -> Result<Claims, AppError> {
    let invalid = || AppError::new(ErrorCode::Unauthenticated, "the bearer token is invalid");
    let (payload, signature) = token.split_once('.').ok_or_else(invalid)?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| invalid())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac takes any key length");
    mac.update(payload.as_bytes());
    mac.verify_slice(&signature).map_err(|_| invalid())?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?)
            .map_err(|_| invalid())?;
    let exp = claims["exp"].as_i64().ok_or_else(invalid)?;
    if exp <= now_secs {
        return Err(AppError::new(
            ErrorCode::Unauthenticated,
            "the bearer token has expired",
        ));
    }
    let id = |key: &str| {
        claims[key]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(invalid)
    };
    let generation = match &claims["gen"] {
        serde_json::Value::Null => 0,
        value => value
            .as_u64()
            .and_then(|g| u32::try_from(g).ok())
            .ok_or_else(invalid)?,
    };
    Ok(Claims {
        principal: id("sub")?,
        session: id("sid")?,
        generation,
    })
}

/// The name of the console's session cookie; it holds a token like a bearer token.
pub const SESSION_COOKIE: &str = "custos_session";

/// The value of cookie `name` in the request, if sent.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The token a request carries: the `Authorization: Bearer` header, else the session cookie.
fn presented_token(headers: &HeaderMap) -> Result<&str, AppError> {
    if let Some(header) = headers.get("authorization") {
        return header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                AppError::new(
                    ErrorCode::Unauthenticated,
                    "the Authorization header must be 'Bearer <token>'",
                )
            });
    }
    cookie(headers, SESSION_COOKIE).ok_or_else(|| {
        AppError::new(
            ErrorCode::Unauthenticated,
            "an Authorization: Bearer token is required (or a console session cookie)",
        )
    })
}

/// Authenticates the caller, names them in `draft` (so a refusal's event says who tried), and
/// refuses unless `allowed` holds: "user 'x' `needs`".
pub fn authorize(
    state: &AppState,
    draft: &mut EventDraft,
    headers: &HeaderMap,
    allowed: impl FnOnce(&Caller) -> bool,
    needs: &str,
) -> Result<Caller, AppError> {
    let caller = authenticate(state, headers)?;
    draft.set_caller(&caller);
    if !allowed(&caller) {
        return Err(AppError::forbidden(format!(
            "user '{}' {needs}",
            caller.principal.upn
        )));
    }
    Ok(caller)
}

/// Refuses unless the caller is an Audit Manager (or a global admin); records who tried.
pub fn audit_manager(
    state: &AppState,
    draft: &mut EventDraft,
    headers: &HeaderMap,
    what: &str,
) -> Result<Caller, AppError> {
    authorize(
        state,
        draft,
        headers,
        |caller| caller.can_manage_audit(state),
        &format!("needs the Audit Manager role to {what}"),
    )
}

/// The caller, if they may read the audit log and its configuration (Audit Reader, Audit
/// Manager or global admin); for calls that are not themselves recorded.
pub fn audit_reader_caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, AppError> {
    let caller = authenticate(state, headers)?;
    if !caller.can_read_audit(state) {
        return Err(AppError::forbidden(format!(
            "user '{}' needs the Audit Reader role",
            caller.principal.upn
        )));
    }
    Ok(caller)
}

/// The caller named by the request's token (bearer header or session cookie).
pub fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, AppError> {
    let token = presented_token(headers)?;
    let claims = verify_token(&state.token_key, token, state.clock.now_secs())?;
    if state.is_revoked(claims.session) {
        return Err(AppError::new(
            ErrorCode::Unauthenticated,
            "the session has been signed out",
        ));
    }
    let principal = state
        .directory
        .principal(claims.principal)
        .filter(|p| !p.disabled)
        .ok_or_else(|| {
            AppError::new(
                ErrorCode::Unauthenticated,
                "the token's user no longer exists or is disabled",
            )
        })?;
    if principal.token_generation != claims.generation {
        return Err(AppError::new(
            ErrorCode::Unauthenticated,
            "the session has ended: the password was changed or reset",
        ));
    }
    Ok(Caller {
        principal,
        session_id: claims.session,
    })
}

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
        crate::throttle::record_refusal(state, draft)
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
        crate::throttle::record_refusal(state, draft)
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
        let body: serde_json::Value = serde_json::from_slice(&body)
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

#[cfg(test)]
mod tests;
