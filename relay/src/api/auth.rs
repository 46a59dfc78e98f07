//! Bearer tokens and roles. Deny by default: [`authenticate`] sees every request, lets only
//! the [`WITHOUT_API_TOKEN`] routes through without an API token, and resolves any other
//! token to the [`Principal`] handlers read (and the token's [`SecretHash`], with which a
//! stream checks that its token still exists); each handler then states the [`Permission`]
//! it needs.
//!
//! Tokens (`ght_` + 256 random bits) are stored as SHA-256 only ([`SecretHash`]); a slow hash
//! is not needed at that entropy. A token speaks for one tenant: its [`TenantScope`] is the
//! only way a handler reaches tenant data.
//!
//! [`TenantScope`]: crate::store::TenantScope

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;

use super::Context;
use super::error::ApiError;
use crate::store::{Principal, Role, SecretHash};

/// The only routes served without an API token, `(method, path)`: health and claim are
/// public, `/metrics` checks a token of its own (the platform's, not a tenant's).
const WITHOUT_API_TOKEN: &[(Method, &str)] = &[
    (Method::GET, "/api/v1/health"),
    (Method::POST, "/api/v1/claim"),
    (Method::GET, "/metrics"),
];

/// What a route may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read the tenant's sites, appliances, incidents, events, alerts and live updates.
    Read,
    /// Acknowledge, resolve and comment incidents.
    HandleIncidents,
    /// Create sites and claim codes.
    Administer,
}

/// Whether `role` grants `permission`.
pub fn allows(role: Role, permission: Permission) -> bool {
    match (role, permission) {
        (Role::Admin, _) => true,
        (Role::Operator, Permission::Read | Permission::HandleIncidents) => true,
        (Role::Viewer, Permission::Read) => true,
        (Role::Operator | Role::Viewer, _) => false,
    }
}

/// 403 unless `principal`'s role grants `permission`.
pub fn require(principal: &Principal, permission: Permission) -> Result<(), ApiError> {
    if allows(principal.role, permission) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "token `{}` ({}) may not do this",
            principal.name,
            principal.role.as_str()
        )))
    }
}

/// Middleware: resolves the bearer token to a [`Principal`] and adds it and the token's
/// [`SecretHash`] to the request's extensions, or answers 401.
pub(super) async fn authenticate(
    State(context): State<Arc<Context>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let exempt = WITHOUT_API_TOKEN
        .iter()
        .any(|(method, path)| request.method() == method && request.uri().path() == *path);
    if exempt {
        return Ok(next.run(request).await);
    }
    let Some(token) = bearer_token(request.headers()) else {
        return Err(ApiError::unauthorized(
            "missing bearer token: send `Authorization: Bearer <token>`",
        ));
    };
    let hash = SecretHash::of_token(token);
    let principal = context
        .state
        .store
        .token_principal(&hash)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
    request.extensions_mut().insert(principal);
    request.extensions_mut().insert(hash);
    Ok(next.run(request).await)
}

/// The token of `Authorization: Bearer <token>`, if the request has one.
pub(super) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_what_the_table_says() {
        use Permission::*;
        let table = [
            (Role::Admin, [true, true, true]),
            (Role::Operator, [true, true, false]),
            (Role::Viewer, [true, false, false]),
        ];
        for (role, expected) in table {
            let got = [Read, HandleIncidents, Administer].map(|p| allows(role, p));
            assert_eq!(got, expected, "{role:?}");
        }
    }
}
