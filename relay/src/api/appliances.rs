//! `GET /appliances`, `GET /appliances/{id}`, `POST /claims`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use gatehouse_protocol::{ApplianceId, SiteId};
use serde::{Deserialize, Serialize};

use super::Context;
use super::auth::{Permission, require};
use super::error::{ApiError, JsonBody, Path, Query};
use super::sites::known_site;
use crate::store::{Appliance, Micros, Principal, TenantScope};

/// How long a claim code can be redeemed: time to ship and install the appliance.
pub const CLAIM_CODE_VALIDITY: Micros = 7 * 24 * 3600 * 1_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    site: Option<SiteId>,
}

pub(super) async fn list(
    State(context): State<Arc<Context>>,
    Extension(principal): Extension<Principal>,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<Appliance>>, ApiError> {
    require(&principal, Permission::Read)?;
    if let Some(site) = &params.site {
        known_site(&context, &principal.scope, site).await?;
    }
    let appliances = context
        .state
        .store
        .appliances(&principal.scope, params.site.as_ref())
        .await?;
    Ok(Json(appliances))
}

pub(super) async fn get_one(
    State(context): State<Arc<Context>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<ApplianceId>,
) -> Result<Json<Appliance>, ApiError> {
    require(&principal, Permission::Read)?;
    Ok(Json(
        known_appliance(&context, &principal.scope, &id).await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewClaim {
    site: SiteId,
    /// The appliance's name, for people.
    name: String,
}

/// The answer to `POST /claims`. Its `Debug` leaves the code out.
#[derive(Serialize)]
pub(super) struct ClaimCode {
    appliance_id: ApplianceId,
    /// Shown once: only its hash is kept.
    code: String,
    expires_at: Micros,
}

impl std::fmt::Debug for ClaimCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimCode")
            .field("appliance_id", &self.appliance_id)
            .field("code", &"***")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Registers an appliance to be installed at a site and answers its one-time claim code.
pub(super) async fn create_claim(
    State(context): State<Arc<Context>>,
    Extension(principal): Extension<Principal>,
    JsonBody(new): JsonBody<NewClaim>,
) -> Result<(StatusCode, Json<ClaimCode>), ApiError> {
    require(&principal, Permission::Administer)?;
    let now = context.now();
    let claim = context
        .state
        .store
        .create_claim(
            &principal.scope,
            &new.site,
            &new.name,
            now,
            now.saturating_add(CLAIM_CODE_VALIDITY),
        )
        .await?;
    tracing::info!(
        appliance = %claim.appliance,
        site = %new.site,
        by = principal.name,
        "claim code made"
    );
    Ok((
        StatusCode::CREATED,
        Json(ClaimCode {
            appliance_id: claim.appliance,
            code: claim.code,
            expires_at: claim.expires_at,
        }),
    ))
}

/// The appliance `id` of the scope's tenant, or 404 (also when it is another tenant's).
pub(super) async fn known_appliance(
    context: &Context,
    scope: &TenantScope,
    id: &ApplianceId,
) -> Result<Appliance, ApiError> {
    context
        .state
        .store
        .appliance(scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("appliance `{id}` not found")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_code_is_never_printed() -> anyhow::Result<()> {
        let answer = ClaimCode {
            appliance_id: ApplianceId::new("app-1")?,
            code: "ABCD-EFGH-JKMN-PQRS-TVWX".into(),
            expires_at: 7,
        };
        let printed = format!("{answer:?}");
        assert!(!printed.contains("ABCD"), "{printed}");
        assert!(printed.contains("app-1"), "{printed}");
        Ok(())
    }
}
