//! Bearer tokens and roles. Deny by default: every request but `health` needs a known token
//! ([`authenticate`]), and every handler states the permission it needs.
//!
//! Tokens are random (`gatehouse-edge token` makes them) and the config keeps only their
//! SHA-256, so a leaked config does not leak a token. A slow password hash is not needed:
//! the tokens have 256 bits of entropy.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::ApiState;
use super::error::ApiError;
use crate::config::UserConfig;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Read, handle incidents, arm zones, bypass points, command devices.
    Integrator,
    /// Read, handle incidents, arm and disarm zones.
    Guard,
}

/// Things a route may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    ReadState,
    HandleIncidents,
    /// Arm and disarm zones.
    ArmZones,
    /// Take a sensor out of the alarm system until its zone is next disarmed.
    BypassPoints,
    CommandDevices,
    ReadMetrics,
}

impl Role {
    pub fn allows(self, permission: Permission) -> bool {
        match (self, permission) {
            (Role::Admin, _) => true,
            (Role::Integrator, Permission::ReadMetrics) => false,
            (Role::Integrator, _) => true,
            (
                Role::Guard,
                Permission::ReadState | Permission::HandleIncidents | Permission::ArmZones,
            ) => true,
            (Role::Guard, _) => false,
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

impl Principal {
    /// 403 unless the role grants `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.role.allows(permission) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "user `{}` ({:?}) may not do this",
                self.name, self.role
            )))
        }
    }
}

/// Token hash → user.
#[derive(Debug, Default)]
pub struct Users {
    by_hash: HashMap<String, Principal>,
}

impl Users {
    pub fn from_config(users: &[UserConfig]) -> Self {
        Users {
            by_hash: users
                .iter()
                .map(|user| {
                    (
                        user.token_sha256.get_ref().clone(),
                        Principal {
                            name: user.name.get_ref().clone(),
                            role: user.role,
                        },
                    )
                })
                .collect(),
        }
    }

    pub fn find(&self, token: &str) -> Option<&Principal> {
        self.by_hash.get(&hash_token(token))
    }
}

/// Lowercase hex SHA-256 of a token, as stored in the config.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random token (`gh_` + 64 hex characters).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("gh_{}", hex::encode(bytes))
}

/// The only paths served without a token, with the console's files.
const PUBLIC_PATHS: &[&str] = &["/api/v1/health"];

/// Media URLs carry a signature instead of a token: their router checks it on every route
/// (`video::verify_signature`), and anything else under it is 404.
const SIGNED_PREFIX: &str = "/media/v1/";

/// Middleware: resolves the bearer token to a [`Principal`] or answers 401.
pub async fn authenticate(
    State(state): State<Arc<ApiState>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if PUBLIC_PATHS.contains(&request.uri().path())
        || super::console::is_public(request.uri().path())
        || request.uri().path().starts_with(SIGNED_PREFIX)
    {
        return Ok(next.run(request).await);
    }
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let token = match header.and_then(|value| value.strip_prefix("Bearer ")) {
        Some(token) => token.trim(),
        None => {
            state.metrics.api_auth_rejected.inc();
            return Err(ApiError::unauthorized(
                "missing bearer token: send `Authorization: Bearer <token>`",
            ));
        }
    };
    let Some(principal) = state.users.find(token).cloned() else {
        state.metrics.api_auth_rejected.inc();
        return Err(ApiError::unauthorized("unknown token"));
    };
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_what_the_table_says() {
        use Permission::*;
        let table = [
            (Role::Admin, [true, true, true, true, true, true]),
            (Role::Integrator, [true, true, true, true, true, false]),
            (Role::Guard, [true, true, true, false, false, false]),
        ];
        for (role, expected) in table {
            let got = [
                ReadState,
                HandleIncidents,
                ArmZones,
                BypassPoints,
                CommandDevices,
                ReadMetrics,
            ]
            .map(|p| role.allows(p));
            assert_eq!(got, expected, "{role:?}");
        }
    }

    #[test]
    fn tokens_are_random_and_hash_to_64_hex() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with("gh_") && a.len() == 67);
        let hash = hash_token(&a);
        assert_eq!(hash.len(), 64);
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
