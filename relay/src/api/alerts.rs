//! `GET /alerts?open=`: the relay's alerts for the tenant (open ones only with `open=true`).

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;

use super::auth::{Permission, require};
use super::error::{ApiError, Query};
use super::{Context, views};
use crate::store::Principal;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    open: Option<bool>,
}

pub(super) async fn list(
    State(context): State<Arc<Context>>,
    Extension(principal): Extension<Principal>,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    require(&principal, Permission::Read)?;
    let alerts = context
        .state
        .store
        .alerts(&principal.scope, params.open.unwrap_or(false))
        .await?;
    Ok(Json(views(&alerts)?))
}
