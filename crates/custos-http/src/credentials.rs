//! Who a request acts as, and the credentials that say so: argon2 password and secret hashes,
//! HMAC-SHA256-signed expiring tokens (a bearer token for the API, or the console's session
//! cookie). Knows nothing of the application state; `auth` checks a request's credentials
//! against it, `sign_in` issues them.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use custos_audit::UserType;
use custos_records::Principal;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use uuid::Uuid;

use crate::error::{AppError, ErrorCode};

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

pub(crate) fn verify_secret(secret: &str, phc: &str) -> bool {
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

/// The console's session cookie over plain http; it holds a token like a bearer token.
const SESSION_COOKIE: &str = "custos_session";
/// The console's session cookie over https. A browser keeps a `__Host-` cookie only when it is
/// Secure, host-only and for path `/`, so a page on a sibling subdomain (or a plain-http page of
/// the same host) cannot set one in its place: no "cookie tossing" that signs a victim's browser
/// into the attacker's session, whose every action would then be recorded as the attacker's.
const HOST_SESSION_COOKIE: &str = "__Host-custos_session";

/// The name of the console's session cookie for a server whose public URL is `public_url`:
/// prefixed `__Host-` over https; the prefix needs the Secure flag, which plain http (a server
/// on loopback) cannot give.
pub fn session_cookie_name(public_url: &str) -> &'static str {
    if public_url.starts_with("https://") {
        HOST_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    }
}

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

#[cfg(test)]
mod tests;
