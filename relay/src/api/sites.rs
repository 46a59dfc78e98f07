//! `GET /tenant`, `GET/POST /sites`, `GET /sites/{id}`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use gatehouse_protocol::SiteId;
use serde::Deserialize;

use super::Context;
use super::auth::{Permission, require};
use super::error::{ApiError, JsonBody, Path};
use crate::store::{Principal, Site, Tenant, TenantScope};

pub(super) async fn tenant(
    State(context): State<Arc<Context>>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Tenant>, ApiError> {
    require(&principal, Permission::Read)?;
    Ok(Json(context.state.store.tenant(&principal.scope).await?))
}

pub(super) async fn list(
    State(context): State<Arc<Context>>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Vec<Site>>, ApiError> {
    require(&principal, Permission::Read)?;
    Ok(Json(context.state.store.sites(&principal.scope).await?))
}

pub(super) async fn get_one(
    State(context): State<Arc<Context>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<SiteId>,
) -> Result<Json<Site>, ApiError> {
    require(&principal, Permission::Read)?;
    Ok(Json(known_site(&context, &principal.scope, &id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewSite {
    name: String,
}

pub(super) async fn create(
    State(context): State<Arc<Context>>,
    Extension(principal): Extension<Principal>,
    JsonBody(new): JsonBody<NewSite>,
) -> Result<(StatusCode, Json<Site>), ApiError> {
    require(&principal, Permission::Administer)?;
    let site = context
        .state
        .store
        .create_site(&principal.scope, &new.name, context.now())
        .await?;
    tracing::info!(site = %site.id, by = principal.name, "site created");
    Ok((StatusCode::CREATED, Json(site)))
}

/// The site `id` of the scope's tenant, or 404 (also when it is another tenant's).
pub(super) async fn known_site(
    context: &Context,
    scope: &TenantScope,
    id: &SiteId,
) -> Result<Site, ApiError> {
    context
        .state
        .store
        .site(scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("site `{id}` not found")))
}
