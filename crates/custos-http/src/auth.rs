//! Authentication of a request: the caller its token names (bearer header or session
//! cookie), checked against the directory and the revoked sessions, and what that caller may do
//! in an instance and in the audit log.

use axum::http::HeaderMap;
use custos_audit::UserType;
use custos_records::{BuiltInRole, ROLE_IDS, SecurityRole};

use crate::credentials::{Caller, cookie, verify_token};
use crate::draft::EventDraft;
use crate::error::{AppError, ErrorCode};
use crate::state::{AppState, Instance};

impl Caller {
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

/// The token a request carries: the `Authorization: Bearer` header, else the session cookie.
fn presented_token<'a>(headers: &'a HeaderMap, session_cookie: &str) -> Result<&'a str, AppError> {
    // One credential per request: with two, a proxy that checks one of them and this service,
    // which would read the other, would not agree on who is asking.
    if headers.get_all("authorization").iter().nth(1).is_some() {
        return Err(AppError::new(
            ErrorCode::Unauthenticated,
            "the request has more than one Authorization header",
        ));
    }
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
    cookie(headers, session_cookie).ok_or_else(|| {
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
    let token = presented_token(headers, state.session_cookie())?;
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
